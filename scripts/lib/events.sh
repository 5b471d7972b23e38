# shellcheck shell=bash
# emit_event: the guide's shell API for the event store, kept on top of `homelab events emit`.
#
#   source scripts/lib/events.sh
#   emit_event TYPE SEVERITY SOURCE SERVICE CORRELATION_ID [DATA]
#   emit_event "deployment_started" "info" "my-script.sh" "mosquitto" "cid-123" '{}'
#
# DATA is a JSON object (default '{}'): names and states, never a secret value.
# The binary is $HOMELAB_BIN, else `homelab` on PATH. The node is $HOMELAB_NODE (else this
# host's name) and the runtime root $HOMELAB_ROOT (else /opt/homelab), as `homelab` reads them.
# Returns homelab's status: 0 when written; 1 when refused (homelab says which argument and
# why on stderr, and nothing is written). Under `set -e`, use `emit_event ... || true` for an
# event that must never stop the script.

emit_event() {
    if [ "$#" -lt 5 ] || [ "$#" -gt 6 ]; then
        echo "emit_event: expected TYPE SEVERITY SOURCE SERVICE CORRELATION_ID [DATA], got $# argument(s)" >&2
        return 1
    fi
    local bin="${HOMELAB_BIN:-}"
    if [ -z "$bin" ]; then
        bin="$(command -v homelab 2>/dev/null)" || bin=""
    fi
    if [ -z "$bin" ]; then
        echo "emit_event: homelab not found: set HOMELAB_BIN or put homelab on PATH" >&2
        return 1
    fi
    local data="${6-}"
    if [ -z "$data" ]; then
        data='{}'
    fi
    # Every value is one argument of its own: nothing here is parsed by a shell again.
    "$bin" events emit -- "$1" "$2" "$3" "$4" "$5" "$data"
}
