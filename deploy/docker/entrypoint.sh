#!/bin/sh
# The image's entrypoint: makes sure the data dir can be written, then execs recgate (so that Node is the
# process that gets SIGTERM). Arguments are recgate's: `serve` (the default), `emulator`, `doctor`, ...
#
# As the image's own user (uid 10001, the default), a data dir it cannot write stops the start at once with
# a message saying how to fix it, instead of a failure at the first recording. Started as root (`--user 0`,
# `user: "0"`), it gives the data dir to uid 10001 first, then drops to that user: recgate never runs as
# root.
set -eu

user=recgate
data_dir="${RECGATE_DATA_DIR:-/data}"
cmd="${1:-serve}"

if [ "$(id -u)" = 0 ]; then
  if [ "$cmd" = serve ]; then
    mkdir -p "$data_dir/recordings"
    # Only what is not the user's yet, so that a large volume is not walked through chown every start.
    if ! find "$data_dir" ! -user "$user" -exec chown "$user:$user" {} + ; then
      echo "recgate: cannot give the data directory $data_dir to user $user (uid $(id -u "$user")); a volume that refuses chown (NFS with root_squash, say) must be made writable by uid $(id -u "$user") where it is served" >&2
      exit 1
    fi
  fi
  exec setpriv --reuid="$user" --regid="$user" --init-groups -- "$0" "$@"
fi

if [ "$cmd" = serve ]; then
  mkdir -p "$data_dir/recordings" 2>/dev/null || true
  for dir in "$data_dir" "$data_dir/recordings"; do
    probe="$dir/.recgate-entrypoint-check.$$"
    if ! { [ -d "$dir" ] && touch "$probe"; } 2>/dev/null; then
      owner=$(stat -c '%u:%g' "$dir" 2>/dev/null || echo missing)
      echo "recgate: the data directory $dir is not writable by uid $(id -u) (gid $(id -g)); it is owned by $owner. Give the volume to uid $(id -u) (chown -R $(id -u):$(id -g) on the host, or fsGroup: $(id -g) in Kubernetes), or start the container as root (--user 0) and this entrypoint fixes the ownership, then drops to uid $(id -u)" >&2
      exit 1
    fi
    rm -f "$probe"
  done
fi

exec /app/bin/recgate.js "$@"
