"""Hydra's own seccomp profile for agent containers: the system calls an agent's tools use, and nothing else.

The profile is written in the JSON format that Docker, Podman, runc/crun and Kubernetes ``Localhost``
profiles read. It is an allow list: a call that is not listed fails with ``ENOSYS`` (it looks
unimplemented, so libraries fall back to an older call), and the calls refused for a reason
(:data:`DENIED`, each documented in ``docs/security.md``) fail with ``EPERM``. Only the native 64-bit
architecture is allowed: 32-bit compatibility entry points (``int 0x80`` on x86_64) are refused whole.

Compared with Docker's default profile (the one agents ran under before), this one also refuses
``io_uring_*``, ``ptrace`` and the other calls that reach into another process, NUMA placement,
``adjtimex``, new-style mount calls, and ``socket(AF_VSOCK)``, which is not isolated by a network
namespace and may reach the hypervisor's host.
"""

from __future__ import annotations

import errno
import json
from functools import cache
from typing import Any

PROFILE_NAME = "hydra"
"""The value of :attr:`~hydra_sandbox.sandbox.spec.ContainerSpec.seccomp` that selects this profile."""

DENIED: dict[str, tuple[tuple[str, ...], str]] = {
    "io_uring": (
        ("io_uring_setup", "io_uring_enter", "io_uring_register"),
        "a second system call interface whose queued operations seccomp cannot see; a frequent source of "
        "kernel privilege escalations; no agent tool needs it (runtimes fall back to threads)",
    ),
    "kernel_programs": (
        ("bpf", "perf_event_open", "userfaultfd"),
        "load code into the kernel, observe other processes, or stretch kernel race windows for exploits",
    ),
    "modules_and_boot": (
        ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot"),
        "load or unload kernel modules, replace or reboot the kernel",
    ),
    "mounts": (
        ("mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
         "fsmount", "fspick", "mount_setattr"),
        "change the filesystem view the sandbox is built from (old and new mount APIs)",
    ),
    "namespaces": (
        ("unshare", "setns"),
        "create or join namespaces (user namespaces reopen every capability inside them); clone with "
        "namespace flags is refused by an argument rule, and clone3 (whose flags seccomp cannot read) "
        "returns ENOSYS so libc falls back to clone",
    ),
    "file_handles": (
        ("name_to_handle_at", "open_by_handle_at"),
        "open files by inode handle, bypassing the mount namespace (the 'shocker' escape)",
    ),
    "keyrings": (
        ("add_key", "request_key", "keyctl"),
        "the kernel keyrings are not namespaced: keys of other containers and the host",
    ),
    "other_processes": (
        ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise"),
        "read, write or steer another process (Codex's own memory holds its session state)",
    ),
    "clocks": (
        ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex"),
        "set or tune the host-wide clock",
    ),
    "host_administration": (
        ("swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "sethostname",
         "setdomainname", "fanotify_init", "fanotify_mark"),
        "administer the host: swap, accounting, quotas, the kernel log, terminals, host names, "
        "filesystem-wide watches",
    ),
    "legacy_hardware": (
        ("iopl", "ioperm", "modify_ldt", "lookup_dcookie", "uselib", "ustat", "sysfs", "_sysctl"),
        "raw I/O ports, 16-bit segments and obsolete interfaces with a history of kernel bugs",
    ),
    "numa": (
        ("mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node"),
        "place or move memory across NUMA nodes, including other processes' pages",
    ),
}
"""Calls refused with ``EPERM``, grouped, each group with its reason."""

_ALLOWED_NAMES = """
read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction rt_sigprocmask
rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap msync mincore madvise
shmget shmat shmctl dup dup2 pause nanosleep getitimer alarm setitimer getpid sendfile connect accept sendto
recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt fork
vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync
fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink symlink
readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo times getuid getgid
setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups setgroups setresuid
getresuid setresgid getresgid getpgid setfsuid setfsgid getsid capget capset rt_sigpending rt_sigtimedwait
rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod statfs fstatfs getpriority setpriority sched_setparam
sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max sched_get_priority_min
sched_rr_get_interval mlock munlock mlockall munlockall prctl arch_prctl setrlimit sync gettid readahead
setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr
lremovexattr fremovexattr tkill time futex sched_setaffinity sched_getaffinity set_thread_area io_setup
io_destroy io_getevents io_submit io_cancel get_thread_area epoll_create remap_file_pages getdents64
set_tid_address restart_syscall semtimedop fadvise64 timer_create timer_settime timer_gettime timer_getoverrun
timer_delete clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes mq_open
mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr waitid ioprio_set ioprio_get inotify_init
inotify_add_watch inotify_rm_watch openat mkdirat mknodat fchownat futimesat newfstatat unlinkat renameat
linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll set_robust_list get_robust_list splice tee
sync_file_range vmsplice utimensat epoll_pwait signalfd timerfd_create eventfd fallocate timerfd_settime
timerfd_gettime accept4 signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev
rt_tgsigqueueinfo recvmmsg prlimit64 syncfs sendmmsg getcpu sched_setattr sched_getattr renameat2 seccomp
getrandom memfd_create execveat membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc
pkey_free statx io_pgetevents rseq pidfd_send_signal pidfd_open close_range openat2 faccessat2 epoll_pwait2
landlock_create_ruleset landlock_add_rule landlock_restrict_self futex_waitv cachestat fchmodat2
map_shadow_stack futex_wake futex_wait futex_requeue mseal setxattrat getxattrat listxattrat removexattrat
"""
ALLOWED: tuple[str, ...] = tuple(_ALLOWED_NAMES.split())
"""Calls allowed without conditions (names unknown to an older kernel or libseccomp are skipped)."""

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: clone is allowed without them."""
AF_VSOCK = 40
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
"""PER_LINUX, PER_LINUX32, with UNAME26, and the query: never ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC."""


def denied_calls() -> set[str]:
    """Every call :data:`DENIED` refuses with EPERM."""
    return {name for names, _reason in DENIED.values() for name in names}


def _conditional_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
        },
    ]
    rules += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
        for v in PERSONALITIES
    ]
    return rules


def seccomp_profile() -> dict[str, Any]:
    """The profile as a JSON-ready dict (a fresh copy each call)."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []},
        ],
        "syscalls": [
            {"names": sorted(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            *_conditional_rules(),
            {"names": sorted(denied_calls()), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        ],
    }


@cache
def seccomp_profile_json() -> str:
    """The profile as compact JSON, as Docker's ``seccomp=`` security option takes it."""
    return json.dumps(seccomp_profile(), separators=(",", ":"), sort_keys=True)
