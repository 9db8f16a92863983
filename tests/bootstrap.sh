#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: promtool and shellcheck from Debian,
# the pinned Python tools into project-local virtualenvs. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

install_venv() { # dir requirements-file
  local dir=$1 requirements=$2 stamp=$1/.installed
  if [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
    return
  fi
  echo "bootstrap: installing $requirements into $dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}
install_venv .venv tests/requirements.txt
install_venv .venv-checkov tests/requirements-checkov.txt

if [ ! -x node_modules/.bin/readme-generator ]; then
  echo "bootstrap: installing the README generator (package-lock.json)"
  npm ci --no-audit --no-fund --silent
fi
