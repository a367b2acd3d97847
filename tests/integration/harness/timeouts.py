# SPDX-License-Identifier: Apache-2.0
"""Every timeout and size the integration tests bound their waits with, in one place."""

import os

MiB = 1 << 20

CMD_TIMEOUT = 120        # one strata command
READY_TIMEOUT = 20       # a mount, registry, nginx or containerd becoming ready
STOP_TIMEOUT = 10        # a daemon or server exiting after umount or SIGTERM
READ_TIMEOUT = 120       # one read (one call) through a FUSE mount; the daemon is killed after it
COMPARE_TIMEOUT = 2 * READ_TIMEOUT   # one layer tree compared through a FUSE mount
INDEX_TIMEOUT = 300      # `strata index --push` (downloads a layer once) or a whole-layer pull
HANDOVER_TIMEOUT = 60    # the old daemon's exit and the new daemon's socket after a takeover
SETTLE_TIMEOUT = 90      # background work seen through stats (the evictor checks every second)
SOCKET_TIMEOUT = 30      # one exchange on a socket a daemon serves (metrics, control socket)
THREADS_TIMEOUT = 300    # a group of reader threads running through a mount
CTR_TIMEOUT = 120        # one ctr-remote command (converting a ~50 MiB layer takes seconds)
# after this many seconds a test's strata daemons are killed, so that a hung FUSE request fails
# the test instead of hanging the run
TEST_TIMEOUT = int(os.environ.get("STRATA_TEST_TIMEOUT", "300"))
