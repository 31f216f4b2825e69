# Shared by scripts/demo and scripts/test: Debian packages, then a virtual environment with
# edge-agent installed (editable) and the extras asked for. Sourced, not run.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  # Installs the Debian packages named that are not installed yet.
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

make_venv() {
  # make_venv DIR EXTRAS [PYTHON]: creates DIR if needed and installs edge-agent with EXTRAS
  # (e.g. "onnx,tflite") using PYTHON (default python3) -- unless DIR already has them for this very
  # pyproject.toml (the install is editable: code changes need no reinstall).
  local venv=$1 extras=$2 python=${3:-python3}
  local stamp="$venv/.edge-agent-install" wanted
  wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
      && "$venv/bin/python" -c "import agent" 2>/dev/null; then
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" 2>/dev/null || { apt_install python3-venv && "$python" -m venv "$venv"; }
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"
  echo "$wanted" > "$stamp"
}
