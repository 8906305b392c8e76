"""Built-in policies written by the Safeguard Desktop team (shipped in the wheel)."""
