#!/usr/bin/env bash
# Run a command (the test suite) in a private network namespace that has only loopback, so the real peers
# the tests start (Orthanc listens on all interfaces) are reachable from nowhere else, and in a private mount
# namespace, so tests may mount a small tmpfs (a disk that fills) that nothing outside sees and that goes away
# with the namespace. Falls back to a network namespace alone, then to running the command as it is, where
# namespaces are not allowed; the tests that need isolation or mounting then skip.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then user=(); else user=(--map-root-user); fi
for flags in "--net --mount --propagation private" "--net"; do
    # shellcheck disable=SC2206  # the flags are meant to split into words
    args=($flags "${user[@]}")
    if unshare "${args[@]}" true 2>/dev/null; then
        # tells tests/support/tmpfs.py that its mounts stay inside this run
        if [ "$flags" != "--net" ]; then export OA_TEST_PRIVATE_MOUNTS=1; fi
        exec unshare "${args[@]}" sh -c 'ip link set lo up && exec "$@"' sh "$@"
    fi
done
echo "note: no private network namespace here; tests that need one are skipped" >&2
exec "$@"
