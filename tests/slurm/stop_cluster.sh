#!/usr/bin/env bash
# Stops the one-node SLURM cluster of start_cluster.sh: only the daemons whose PID files are in STATE_DIR/run
# (that is, the ones start_cluster.sh started), after cancelling this cluster's jobs. Removes the
# /etc/slurm/{slurm,gres}.conf symlinks when they point into STATE_DIR. Keeps STATE_DIR (logs, database) unless
# --purge is given.
#
#   tests/slurm/stop_cluster.sh [--purge] [STATE_DIR]      (default: $SLURM_TEST_DIR, else /tmp/vlpeft-slurm)
set -uo pipefail

PURGE=0
if [ "${1:-}" = --purge ]; then PURGE=1; shift; fi
D=${1:-${SLURM_TEST_DIR:-/tmp/vlpeft-slurm}}
log() { printf '[stop_cluster] %s\n' "$*" >&2; }
[ -d "$D" ] || { log "no state dir $D: nothing to stop"; exit 0; }
D=$(cd "$D" && pwd)
export SLURM_CONF=$D/etc/slurm.conf

alive() { kill -0 "$1" 2>/dev/null; }

pid_of() { # pid_of NAME: the PID from NAME's PID file, if that process is alive
    local f="$D/run/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

# Jobs first, so that no slurmstepd or job process outlives slurmd.
if pid_of slurmctld >/dev/null && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    log "cancelling jobs: $(squeue -h -o %i | tr '\n' ' ')"
    scancel --full $(squeue -h -o %i) 2>/dev/null
    for _ in $(seq 1 60); do
        [ -z "$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi

status=0
for name in slurmd slurmctld slurmdbd mariadb munged; do
    pid=$(pid_of "$name") || { rm -f "$D/run/$name.pid"; continue; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.2; done
    if alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    if alive "$pid"; then log "could not stop $name (pid $pid)"; status=1; else rm -f "$D/run/$name.pid"; fi
done

for f in slurm.conf gres.conf; do
    link=/etc/slurm/$f
    [ -L "$link" ] && [ "$(readlink "$link")" = "$D/etc/$f" ] && rm -f "$link"
done

if [ "$PURGE" = 1 ] && [ "$status" = 0 ]; then
    rm -rf "$D"
    log "removed $D"
fi
exit $status
