# deploy/lib/procs.sh: the process bookkeeping of the deploy scripts (sourced by deploy/demo.sh and
# deploy/ablations.sh): every background process a script starts is recorded in $pids and stopped,
# with all its descendants, on any exit (`own_processes NAME` sets the traps: stop_all on exit,
# exit 130 with a line on Ctrl-C or SIGTERM).
# Long steps run in the background and are waited for, so that a signal reaches the trap at once.
# A step's own children (mpirun's ranks, a script's programs) get the signal too: a shell defers its
# traps while a foreground child runs, so the whole tree is signalled at once.
pids=()
tree() { # tree PID: PID and all its descendants
  ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { todo[1] = root; n = 1; while (n) { p = todo[n--]; print p; m = split(kids[p], k, " ");
          for (i = 1; i <= m; i++) todo[++n] = k[i] } }'
}
stop_all() {
  local p all=()
  for p in "${pids[@]}"; do all+=($(tree "$p")); done
  [ ${#all[@]} -eq 0 ] || kill -TERM "${all[@]}" 2>/dev/null || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
own_processes() {
  trap stop_all EXIT
  # shellcheck disable=SC2064 # the name is fixed now
  trap "echo '$1: interrupted' >&2; exit 130" INT TERM
}
forget() { local keep=() p; for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; pids=("${keep[@]}"); }
run() { # run CMD...: in the background, waited for; its status is run's
  "$@" & local p=$!
  pids+=("$p")
  local rc=0; wait "$p" || rc=$?
  forget "$p"
  return "$rc"
}
# own_out SCRIPT OUT MARKER: refuses (exit 2) an OUT that exists, is not empty and lacks MARKER
# (so that emptying it can only delete a folder this script made), then empties it and marks it.
own_out() {
  if [ -e "$2" ] && [ ! -f "$2/$3" ] && [ -n "$(ls -A "$2" 2>/dev/null || echo x)" ]; then
    echo "$1: $2 exists and was not made by $1 (no $2/$3): not deleting it" >&2
    exit 2
  fi
  rm -rf "$2"; mkdir -p "$2"; : > "$2/$3"
}
# serve DB NAME: taca-featured ($bin) on 127.0.0.1 (an ephemeral port), logging to $out/NAME.featured.log;
# sets $port. Not in $(...): a subshell's PIDs would never reach the trap. stop_servers stops the
# daemons serve started (not the script's other processes).
servers=()
stop_servers() { # the taca-featured daemons serve started, not the other processes
  local p
  for p in "${servers[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; forget "$p"; done
  servers=()
}
serve() {
  rm -f "$out/$2.ports"
  "$bin/taca-featured" --db "$1" --listen 127.0.0.1:0 --port-file "$out/$2.ports" > "$out/$2.featured.log" 2>&1 &
  pids+=("$!"); servers+=("$!")
  for _ in $(seq 200); do [ -s "$out/$2.ports" ] && break; sleep 0.05; done
  port=$(sed -n 's/^grpc=//p' "$out/$2.ports")
  [ -n "$port" ] || { echo "$0: taca-featured did not start (see $out/$2.featured.log)" >&2; exit 1; }
}
