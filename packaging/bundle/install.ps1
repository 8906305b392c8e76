# Safeguard Desktop @VERSION@ offline installer for Windows (@PLATFORM@, Python @PYTHON@).
#
# Usage (PowerShell):  .\install.ps1 [-Target DIR]
#   -Target  the virtual environment to create
#            (default: $env:LOCALAPPDATA\safeguard-desktop\venv)
#   -Python  the interpreter (default: py -@PYTHON@, else python)
# If scripts are blocked: powershell -ExecutionPolicy Bypass -File .\install.ps1
#
# Nothing here touches the network: every file is checked against SHA256SUMS first, then
# pip (run from the bundled pip wheel) installs with --no-index from .\wheels, each wheel
# checked against requirements.lock's sha256.
#
# Written to mirror install.sh; not yet run on Windows. A Windows bundle also needs a lock
# made on Windows: python packaging\lock.py (see packaging/README.md).
[CmdletBinding()]
param(
    [string]$Target = (Join-Path $env:LOCALAPPDATA "safeguard-desktop\venv"),
    [string]$Python = ""
)
$ErrorActionPreference = "Stop"
$Version = "@VERSION@"
$PyVer = "@PYTHON@"
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path

function Say($text) { Write-Host "install.ps1: $text" }
function Die($text) { Write-Host "install.ps1: $text" -ForegroundColor Red; exit 1 }

# 1. A Python of the version the wheels were built for.
$PyCmd = @()
if ($Python) { $PyCmd = @($Python) }
elseif (Get-Command py -ErrorAction SilentlyContinue) { $PyCmd = @("py", "-$PyVer") }
elseif (Get-Command python -ErrorAction SilentlyContinue) { $PyCmd = @("python") }
else { Die "no Python found: this bundle needs Python $PyVer (pass -Python C:\path\to\python.exe)" }
$PyExe = $PyCmd[0]
$PyArgs = @($PyCmd | Select-Object -Skip 1)
$Have = & $PyExe @PyArgs -c "import sys; print('%d.%d' % sys.version_info[:2])"
if ($LASTEXITCODE -ne 0) { Die "$($PyCmd -join ' ') does not run" }
if ($Have.Trim() -ne $PyVer) {
    Die "this bundle holds wheels for Python $PyVer, but $($PyCmd -join ' ') is Python $Have"
}

# 2. Every file against SHA256SUMS, before anything is written.
Say "checking every file of the bundle against SHA256SUMS"
$Problems = @()
$Listed = @{}
foreach ($line in Get-Content -LiteralPath (Join-Path $Here "SHA256SUMS") -Encoding UTF8) {
    if (-not $line.Trim()) { continue }
    $parts = $line -split "  ", 2
    if ($parts.Count -ne 2 -or $parts[0].Length -ne 64 -or $parts[1].Contains("..")) {
        $Problems += "SHA256SUMS line is not '<sha256>  <file>': $line"; continue
    }
    $Listed[$parts[1].TrimStart("*")] = $parts[0].ToLower()
}
foreach ($name in $Listed.Keys) {
    $path = Join-Path $Here ($name -replace "/", "\")
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { $Problems += "missing: $name"; continue }
    $got = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLower()
    if ($got -ne $Listed[$name]) {
        $Problems += "ALTERED: ${name}: its sha256 is $got, SHA256SUMS says $($Listed[$name])"
    }
}
foreach ($file in Get-ChildItem -LiteralPath (Join-Path $Here "wheels") -File -Recurse) {
    $rel = $file.FullName.Substring($Here.Length + 1) -replace "\\", "/"
    if (-not $Listed.ContainsKey($rel)) { $Problems += "not in SHA256SUMS (added?): $rel" }
}
if ($Listed.Count -eq 0) { $Problems += "SHA256SUMS lists no file" }
if ($Problems.Count -gt 0) {
    $Problems | ForEach-Object { Write-Host "install.ps1: $_" -ForegroundColor Red }
    Die ("REFUSED: the bundle does not match its SHA256SUMS. It was altered or damaged on " +
         "the way: nothing was installed. Get a fresh copy and check its signature.")
}
Say "$($Listed.Count) files match SHA256SUMS"

# 3. The virtual environment, without pip.
if ((Test-Path $Target) -and -not (Test-Path (Join-Path $Target "pyvenv.cfg")) -and
    (Get-ChildItem $Target -Force | Select-Object -First 1)) {
    Die "$Target exists and is not a virtual environment: give another -Target"
}
$Clear = @()
if (Test-Path (Join-Path $Target "pyvenv.cfg")) { $Clear = @("--clear") }
& $PyExe @PyArgs -m venv @Clear --without-pip $Target
if ($LASTEXITCODE -ne 0) { Die "could not create the virtual environment at $Target" }
$VPy = Join-Path $Target "Scripts\python.exe"

# 4. pip from the bundled wheel; no pip configuration or PIP_* variable applies.
$PipWheel = @(Get-ChildItem (Join-Path $Here "wheels\pip-*.whl"))
if ($PipWheel.Count -ne 1) { Die "the bundle should hold exactly one pip wheel" }
Get-ChildItem env: | Where-Object { $_.Name -like "PIP_*" } |
    ForEach-Object { Remove-Item "env:$($_.Name)" }
$env:PIP_CONFIG_FILE = "nul"
$env:PYTHONNOUSERSITE = "1"
& $VPy (Join-Path $PipWheel[0].FullName "pip") install --isolated --no-index `
    --find-links (Join-Path $Here "wheels") --only-binary=:all: --require-hashes `
    --no-cache-dir --disable-pip-version-check --no-input --progress-bar off `
    -r (Join-Path $Here "requirements.lock")
if ($LASTEXITCODE -ne 0) { Die "pip could not install the bundle into $Target (see above)" }

$App = Join-Path $Target "Scripts\safeguard-desktop.exe"
& $App --version
if ($LASTEXITCODE -ne 0) { Die "$App was installed but does not start" }
Say "installed Safeguard Desktop $Version into $Target"
Say "start it with: $App"
