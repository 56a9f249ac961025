#!/usr/bin/env bash
# Makes the dev overlay's certificates and role map with the control
# service's own --dev generator (one definition of the dev PKI), once.
#   deploy/overlays/dev/make-certs.sh [PATH/TO/portcullis-control]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
control="${1:-$here/../../../build/control/portcullis-control}"
"$control" --dev --dev-certs-only --state-dir "$here/certs" >/dev/null
echo "dev certificates in $here/certs/tls"
