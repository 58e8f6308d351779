#!/bin/sh
# Writes the random secrets deploy/compose needs under secrets/, once: an existing file is
# kept. secrets/ is mode 700 (other users of this machine cannot reach it); its files are
# readable inside the containers, which run as other users (Keyhole as uid 65532).
# The console's client secret comes from your issuer: pass it as the first argument, or
# write it to secrets/console_client_secret yourself.
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
chmod 700 secrets

random() { # bytes
  od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'
}
write() { # file value
  if [ ! -s "secrets/$1" ]; then
    printf '%s\n' "$2" >"secrets/$1"
    echo "wrote secrets/$1"
  fi
  chmod 644 "secrets/$1"
}

write postgres_password "$(random 24)"
write crm_api_key "$(random 24)"
write console_session_key "$(random 32)"
# masking.hash_key reads the environment only: an env file both replicas load.
write keyhole.env "KEYHOLE_MASK_HASH_KEY=$(random 32)"
if [ $# -gt 0 ]; then
  write console_client_secret "$1"
elif [ ! -s secrets/console_client_secret ]; then
  echo "secrets/console_client_secret is missing: pass the console app's client secret as the first argument" >&2
  exit 1
fi
