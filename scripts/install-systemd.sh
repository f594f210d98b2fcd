#!/usr/bin/env bash
# Install extmm as a systemd service. Run as root from a checkout.
#
# What it does, and nothing else:
#   - builds a wheel of this checkout in a temporary directory;
#   - creates the venv /opt/extmm/venv and installs into it the pinned, hash-checked
#     dependencies of requirements.lock, then the wheel (--no-deps);
#   - creates the system user `extmm`, /etc/extmm/{config.json,extmm.env} (only if
#     missing) and the unit /etc/systemd/system/extmm.service.
# No file of the checkout is copied to /opt/extmm: no .env, no .git, no developer venv.
# It does not enable or start the service: check the credentials first (printed below).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/opt/extmm
venv="$prefix/venv"
python="${PYTHON:-python3}"

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
# Build from a clean copy of the tracked sources only (git archive), so nothing
# untracked (.env, .venv, recordings) can end up in the wheel.
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" archive --format=tar HEAD | tar -x -C "$build"
  tree="$build"
else
  tree="$src"
fi
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$build/wheel" "$tree"

id -u extmm >/dev/null 2>&1 || useradd --system --home-dir "$prefix" --shell /usr/sbin/nologin extmm
install -d -m 0755 "$prefix" /etc/extmm
install -d -m 0750 -o extmm -g extmm /var/log/extmm
"$python" -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r "$src/requirements.lock"
"$venv/bin/pip" install --quiet --no-deps "$build"/wheel/extmm-*.whl

[ -f /etc/extmm/config.json ] || install -m 0640 -o root -g extmm "$src/config/config.json" /etc/extmm/config.json
if [ ! -f /etc/extmm/extmm.env ]; then
  install -m 0640 -o root -g extmm "$src/.env.example" /etc/extmm/extmm.env
  echo "edit /etc/extmm/extmm.env (API key, Stark keys, vault, EXTENDED_NETWORK) before starting"
fi
# Readable by the service user (for the credential check below), by nobody else.
chown root:extmm /etc/extmm/extmm.env /etc/extmm/config.json
chmod 0640 /etc/extmm/extmm.env /etc/extmm/config.json
install -m 0644 "$src/scripts/extmm.service" /etc/systemd/system/extmm.service
systemctl daemon-reload

cat <<MSG
installed $(ls "$build"/wheel) into $venv
next, as the service user, check credentials, account, markets, fees and sizes:
  sudo -u extmm $venv/bin/python -m extmm check --config /etc/extmm/config.json \\
      --network testnet --env-file /etc/extmm/extmm.env
only when it exits 0:
  systemctl enable --now extmm && journalctl -u extmm -f
MSG
