#!/usr/bin/env bash
# Installs aiosmtpd (the local SMTP server the alert e-mail tests deliver to) into the
# project venv and prints the venv's python, which the tests find as NEXUS_TEST_PYTHON.
set -euo pipefail
source "$(dirname "$0")/common.sh"
venv_require "$NEXUS_PY_AIOSMTPD"
"$NEXUS_VENV/bin/python" -c 'import aiosmtpd' || die "aiosmtpd not importable after pip install"
echo "$NEXUS_VENV/bin/python"
