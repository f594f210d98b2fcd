#!/usr/bin/env bash
# Install extmm as a systemd service: dedicated user, venv in /opt/extmm, config and
# secrets in /etc/extmm (secrets file mode 0600). Run as root from a checkout.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/opt/extmm
id -u extmm >/dev/null 2>&1 || useradd --system --home-dir "$prefix" --shell /usr/sbin/nologin extmm
mkdir -p "$prefix" /etc/extmm /var/log/extmm
cp -r "$src"/. "$prefix"/
python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet "$prefix"
[ -f /etc/extmm/config.json ] || cp "$src/config/config.json" /etc/extmm/config.json
if [ ! -f /etc/extmm/extmm.env ]; then
  cp "$src/.env.example" /etc/extmm/extmm.env
  echo "edit /etc/extmm/extmm.env with your API and Stark keys before starting"
fi
chmod 0600 /etc/extmm/extmm.env
chown -R extmm:extmm "$prefix" /var/log/extmm
chown root:extmm /etc/extmm/extmm.env /etc/extmm/config.json
chmod 0640 /etc/extmm/config.json
install -m 0644 "$src/scripts/extmm.service" /etc/systemd/system/extmm.service
systemctl daemon-reload
echo "check first:  sudo -u extmm $prefix/.venv/bin/python -m extmm check --config /etc/extmm/config.json"
echo "then:         systemctl enable --now extmm && journalctl -u extmm -f"
