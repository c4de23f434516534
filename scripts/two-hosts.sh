#!/usr/bin/env bash
# Two simulated hosts on one machine, for multi-host runs on every CI run:
#
#   scripts/two-hosts.sh [--limit SECONDS] COMMAND [ARGS...]
#
# sets up two Linux network namespaces joined by a veth pair (10.77.0.1 and
# 10.77.0.2, private), each with its own hostname (h1, h2: a UTS namespace
# of its own, without which Open MPI takes both for one host) and /etc/hosts
# naming both, and runs COMMAND as host h1, with:
#
#   TWO_HOSTS_MPIRUN  an mpirun that starts ranks on h1 and h2
#                     (--host h1:1,h2:1), reaching h2 through a small
#                     "ssh" agent that runs PRRTE's daemon inside h2;
#   DTL_MPIRUN        the same, so that `dtl run` starts its ranks there;
#   TWO_HOSTS_NETNS   the two namespaces' names ("NS1 NS2"), for tests that
#                     look inside them (`ip netns pids NS2`).
#
# Everything is torn down when it ends, whatever the outcome (a trap): the
# namespaces (their processes killed first), the hosts files, the agent.
# COMMAND is killed after --limit seconds (default 300): a misconfigured
# network hangs silently. The exit status is COMMAND's (124 on the limit).
#
# It needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` (iproute2) and
# `unshare` (util-linux). Without them it says so and exits 77 ("skipped");
# with CI=true set a skip is a failure (exit 1): CI has both.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

limit=300
if [ "${1:-}" = "--limit" ]; then
  limit="$2"
  shift 2
fi
if [ $# -eq 0 ]; then
  echo "usage: scripts/two-hosts.sh [--limit SECONDS] COMMAND [ARGS...]" >&2
  exit 2
fi

skip() {
  echo "two-hosts: cannot simulate two hosts here: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "two-hosts: CI=true, and CI has what this needs: failing" >&2
    exit 1
  fi
  exit 77
}
command -v ip >/dev/null || skip "no \`ip\` (Debian: apt install iproute2)"
command -v unshare >/dev/null || skip "no \`unshare\` (util-linux)"
[ "$(id -u)" -eq 0 ] || skip "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"

# Names of our own, so that two runs at once do not meet.
ns1="dtl-h1-$$"
ns2="dtl-h2-$$"
work="$(mktemp -d /tmp/dtl-two-hosts.XXXXXX)"

teardown() {
  local status=$?
  set +e
  for ns in "$ns2" "$ns1"; do
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
      # Nothing may outlive the hosts: every process inside is killed.
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null
      ip netns delete "$ns" 2>/dev/null
    fi
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$work"
  exit "$status"
}
trap teardown EXIT INT TERM

ip netns add "$ns1" 2>/dev/null || skip "cannot create a network namespace"
ip netns add "$ns2"
ip link add "$ns1-v" type veth peer name "$ns2-v" 2>/dev/null \
  || ip link add "v1-$$" type veth peer name "v2-$$"
if ip link show "$ns1-v" >/dev/null 2>&1; then v1="$ns1-v"; v2="$ns2-v"; else v1="v1-$$"; v2="v2-$$"; fi
ip link set "$v1" netns "$ns1"
ip link set "$v2" netns "$ns2"
ip -n "$ns1" addr add 10.77.0.1/24 dev "$v1"
ip -n "$ns2" addr add 10.77.0.2/24 dev "$v2"
for ns in "$ns1" "$ns2"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns1" link set "$v1" up
ip -n "$ns2" link set "$v2" up

# `ip netns exec NS` binds /etc/netns/NS/hosts over /etc/hosts.
for ns in "$ns1" "$ns2"; do
  mkdir -p "/etc/netns/$ns"
  printf '127.0.0.1 localhost\n10.77.0.1 h1\n10.77.0.2 h2\n' > "/etc/netns/$ns/hosts"
done

# PRRTE reaches a host through an "ssh" agent: `AGENT HOST COMMAND...`, the
# command a shell line. Ours runs it inside that host's namespace, under
# its hostname; the environment goes along (it is this machine).
cat > "$work/agent" <<EOF
#!/usr/bin/env bash
host="\$1"; shift
case "\$host" in
  h1) ns="$ns1" ;;
  h2) ns="$ns2" ;;
  *) echo "two-hosts agent: unknown host \$host" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$host; \$*"
EOF
chmod +x "$work/agent"

mpirun="$(command -v mpirun || true)"
[ -x "$root/.venv/bin/mpirun" ] && mpirun="$root/.venv/bin/mpirun"
[ -n "$mpirun" ] || skip "no mpirun (run scripts/setup.sh)"
cat > "$work/mpirun" <<EOF
#!/usr/bin/env bash
# mpirun across the two simulated hosts (see scripts/two-hosts.sh).
exec "$mpirun" --host h1:1,h2:1 --prtemca plm_ssh_agent "$work/agent" \\
  --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 "\$@"
EOF
chmod +x "$work/mpirun"

export TWO_HOSTS_MPIRUN="$work/mpirun" DTL_MPIRUN="$work/mpirun" TWO_HOSTS_NETNS="$ns1 $ns2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set +e
timeout --kill-after=10 "$limit" \
  ip netns exec "$ns1" unshare --uts sh -c 'hostname h1; exec "$@"' two-hosts "$@"
status=$?
set -e
exit "$status"
