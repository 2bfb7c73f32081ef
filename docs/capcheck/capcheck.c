// Which capability each privileged step of sonde needs. Build and run as root under a reduced
// bounding set (docs/capabilities.md):
//   gcc -O1 -Wall -o capcheck capcheck.c
//   mkdir <cgroup2 mount>/capcheck; cp /bin/true /tmp/capcheck-true
//   setpriv --reuid 65534 --regid 65534 --clear-groups sleep 60 &
//   setpriv --bounding-set -all,+bpf,+perfmon,+net_admin ./capcheck <cgroup2 mount>/capcheck $!
// Every step says ok or the error it got. The uprobe is placed on a private copy of /bin/true
// and the sock_ops program on an empty cgroup (then detached): nothing else is touched.
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
static long bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }
static int load(int type, int expected) {
  struct bpf_insn insns[] = { {.code = 0xb7, .dst_reg = 0, .imm = 1}, {.code = 0x95} };
  union bpf_attr a; memset(&a, 0, sizeof a);
  a.prog_type = type; a.insns = (unsigned long)insns; a.insn_cnt = 2;
  a.license = (unsigned long)"GPL"; a.expected_attach_type = expected;
  return bpf(BPF_PROG_LOAD, &a);
}
static void proc_checks(const char *pid) {
  const char *what[] = {"environ", "exe", "root/etc/hostname"};
  for (int i = 0; i < 3; i++) {
    char p[128];
    snprintf(p, sizeof p, "/proc/%s/%s", pid, what[i]);
    FILE *f = fopen(p, "r");
    printf("open /proc/<other user's pid>/%s: %s\n", what[i], f ? "ok" : strerror(errno));
    if (f) fclose(f);
  }
}

static void uprobe_check(void) {
  FILE *f = fopen("/sys/bus/event_source/devices/uprobe/type", "r");
  int type = -1;
  if (f) { if (fscanf(f, "%d", &type) != 1) type = -1; fclose(f); }
  struct perf_event_attr pa; memset(&pa, 0, sizeof pa);
  pa.type = type; pa.size = sizeof pa;
  pa.config1 = (unsigned long)"/tmp/capcheck-true"; pa.config2 = 0x1000;
  int fd = syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
  printf("perf_event_open uprobe (all processes): %s\n", fd < 0 ? strerror(errno) : "ok");
  if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: capcheck CGROUP_DIR OTHER_USERS_PID\n"); return 2; }
  const char *cg = argv[1];
  int p = load(BPF_PROG_TYPE_SOCK_OPS, 0);
  printf("load sock_ops: %s\n", p < 0 ? strerror(errno) : "ok");
  if (p >= 0) {
    int fd = open(cg, O_RDONLY | O_DIRECTORY);
    union bpf_attr a; memset(&a, 0, sizeof a);
    a.target_fd = fd; a.attach_bpf_fd = p; a.attach_type = BPF_CGROUP_SOCK_OPS;
    long r = bpf(BPF_PROG_ATTACH, &a);
    printf("attach sock_ops to a cgroup: %s\n", r < 0 ? strerror(errno) : "ok");
    if (r == 0) bpf(BPF_PROG_DETACH, &a);
  }
  union bpf_attr m; memset(&m, 0, sizeof m);
  m.map_type = BPF_MAP_TYPE_SOCKHASH; m.key_size = 8; m.value_size = 4; m.max_entries = 16;
  int mf = bpf(BPF_MAP_CREATE, &m);
  printf("create sockhash: %s\n", mf < 0 ? strerror(errno) : "ok");
  int sk = load(BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT);
  printf("load sk_msg: %s\n", sk < 0 ? strerror(errno) : "ok");
  if (sk >= 0 && mf >= 0) {
    union bpf_attr a; memset(&a, 0, sizeof a);
    a.target_fd = mf; a.attach_bpf_fd = sk; a.attach_type = BPF_SK_MSG_VERDICT;
    long r = bpf(BPF_PROG_ATTACH, &a);
    printf("attach sk_msg to the sockhash: %s\n", r < 0 ? strerror(errno) : "ok");
  }
  union bpf_attr rb; memset(&rb, 0, sizeof rb);
  rb.map_type = BPF_MAP_TYPE_RINGBUF; rb.max_entries = 1 << 20;
  int rf = bpf(BPF_MAP_CREATE, &rb);
  printf("create 1 MiB ringbuf: %s\n", rf < 0 ? strerror(errno) : "ok");
  int tp = load(BPF_PROG_TYPE_TRACEPOINT, 0);
  printf("load tracepoint prog: %s\n", tp < 0 ? strerror(errno) : "ok");
  FILE *f = fopen("/sys/kernel/tracing/events/syscalls/sys_enter_getppid/id", "r");
  int id = -1; if (f) { if (fscanf(f, "%d", &id) != 1) id = -1; fclose(f); }
  if (tp >= 0 && id > 0) {
    struct perf_event_attr pa; memset(&pa, 0, sizeof pa);
    pa.type = PERF_TYPE_TRACEPOINT; pa.size = sizeof pa; pa.config = id; pa.sample_period = 1; pa.wakeup_events = 1;
    int pfd = syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
    printf("perf_event_open tracepoint (all processes): %s\n", pfd < 0 ? strerror(errno) : "ok");
    if (pfd >= 0) {
      int r = ioctl(pfd, PERF_EVENT_IOC_SET_BPF, tp);
      printf("attach tracepoint prog: %s\n", r < 0 ? strerror(errno) : "ok");
    }
  } else printf("tracepoint id: %d (tracefs at /sys/kernel/tracing?)\n", id);
  mkdir("/tmp/capcheck-mnt", 0755);
  int r = mount("tracefs", "/tmp/capcheck-mnt", "tracefs", 0, NULL);
  printf("mount tracefs: %s\n", r < 0 ? strerror(errno) : "ok");
  if (r == 0) umount("/tmp/capcheck-mnt");
  rmdir("/tmp/capcheck-mnt");
  struct rlimit { unsigned long c, m; } rl = { ~0UL, ~0UL };
  r = syscall(__NR_setrlimit, 8 /*RLIMIT_MEMLOCK*/, &rl);
  printf("raise RLIMIT_MEMLOCK: %s\n", r < 0 ? strerror(errno) : "ok");
  uprobe_check();
  proc_checks(argv[2]);
  return 0;
}
