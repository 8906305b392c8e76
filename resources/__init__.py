"""Icons, style sheets and desktop integration files."""
