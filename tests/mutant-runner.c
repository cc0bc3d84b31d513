/* mutant-runner - run many short commands of the project's tools, each in a
 * fresh process, without an exec per command.
 *
 *   mutant-runner [-t SECONDS] [-v KIB] [-c CPUSECONDS] [-r FILE] [-b N] DIR < JOBS
 *
 * JOBS has one command a line, its words separated by tabs; the first word
 * names the program: "vdconvert" (tools/vdconvert, linked in whole) or
 * "qcow2-write-tool" (tests/qcow2-write-tool.c).  Each command runs in a
 * child forked from this process, which calls that program's main() with
 * the line's words as argv, its stdout in DIR/N.out and its stderr in
 * DIR/N.err (N counts the lines from 0), and ends with exit(), so what the
 * program does at exit (stdio, LeakSanitizer) happens as in its own process.
 * One line per command is printed: "N STATUS OUTBYTES ERRBYTES", STATUS
 * being the exit status, 128+SIGNAL when a signal ended it, or 124 when it
 * ran out of time (as timeout(1) says).
 *   -t  wall-clock limit per command (default 10 s), then SIGKILL
 *   -v  address-space limit (setrlimit RLIMIT_AS, as `ulimit -v`)
 *   -c  CPU-time limit (RLIMIT_CPU, as `ulimit -t`)
 *   -r  FILE is removed before each command (an output the last one left)
 *   -b  up to N commands in turn in one child (default 1): for the ASan
 *       run, where a child's fixed cost (fork, exit handlers, the leak scan
 *       at exit) is most of a short command's.  Each command still starts
 *       from main() with its own output files and time limit; a command
 *       that crashes or exits ends its child, and the next command starts
 *       in a new one.  The last command of a child is the one whose exit
 *       the leak check follows: the jobs group one mutant's commands per
 *       child (N a multiple of the commands per mutant), so a leak is
 *       reported in that mutant's last command.  -v and -c limit each child.
 *
 * Why: the hostile-input tests run a thousand short commands over mutants of
 * small images.  Each exec costs more than the command's work (loading
 * libvdisk, and under ASan the sanitizer runtime's start and its shadow
 * memory); a fork of this small process costs little, and every command
 * still runs the tool's own code from main() on, in a process of its own,
 * so one that crashes, hangs or leaks is caught and named as before. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int vdconvert_main(int argc, char **argv);
int qcow2_tool_main(int argc, char **argv);

static const struct {
    const char *name;
    int (*main)(int, char **);
} programs[] = {
    { "vdconvert", vdconvert_main },
    { "qcow2-write-tool", qcow2_tool_main },
};

/* LeakSanitizer's, when the sanitizer runtime is linked in (else NULL). */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
}

static void set_limit(int res, unsigned long v)
{
    struct rlimit rl = { v, v };
    if (setrlimit(res, &rl) < 0) {
        perror("mutant-runner: setrlimit");
        _exit(125);
    }
}

static void redirect(int fd, const char *dir, long n, const char *ext)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%ld.%s", dir, n, ext);
    int f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f < 0 || dup2(f, fd) < 0) {
        perror(path);
        _exit(125);
    }
    close(f);
}

static long file_size(const char *dir, long n, const char *ext)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%ld.%s", dir, n, ext);
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Splits LINE at tabs into ARGV (at most MAX - 1 words); returns the count. */
static int split(char *line, char **argv, int max)
{
    int argc = 0;
    for (char *w = line; w && argc < max - 1; ) {
        argv[argc++] = w;
        w = strchr(w, '\t');
        if (w)
            *w++ = '\0';
    }
    argv[argc] = NULL;
    return argc;
}

/* LINE's program (its first word), or NULL. */
static int (*program(const char *line))(int, char **)
{
    size_t len = strcspn(line, "\t");
    for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++)
        if (strlen(programs[i].name) == len && !strncmp(line, programs[i].name, len))
            return programs[i].main;
    return NULL;
}

/* The child: limits, then commands FIRST..END-1 in turn, each with its own
 * output files from main() on.  Every status but the last goes to the
 * parent through fd DONE; the last is the child's exit status, after the
 * exit handlers (stdio, LeakSanitizer) have run. */
static void child(char **lines, long first, long end, const char *dir, const char *rm_file,
                  int done, unsigned long as_kib, unsigned long cpu_s)
{
    signal(SIGALRM, SIG_DFL);
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, STDIN_FILENO) < 0) {
        perror("/dev/null");
        _exit(125);
    }
    close(null);
    if (as_kib)
        set_limit(RLIMIT_AS, as_kib * 1024);
    if (cpu_s)
        set_limit(RLIMIT_CPU, cpu_s);
    for (long n = first; n < end; n++) {
        char *argv[64];
        int argc = split(lines[n], argv, 64);
        if (n > first && rm_file && unlink(rm_file) < 0 && errno != ENOENT)
            _exit(125);
        fflush(stdout);
        fflush(stderr);
        redirect(STDOUT_FILENO, dir, n, "out");
        redirect(STDERR_FILENO, dir, n, "err");
        /* getopt as in a new process (the runner's own options were
         * parsed, or the last command's): 0 makes glibc start over */
        optind = 0;
        int st = program(argv[0])(argc, argv);
        if (n == end - 1)
            exit(st);
        fflush(stdout);
        fflush(stderr);
        st &= 0xff;   /* as exit() would pass it on */
        if (write(done, &st, sizeof st) != sizeof st)
            _exit(125);
    }
    _exit(125);   /* not reached: the last command exits */
}

/* The result line of command N. */
static void report(const char *dir, long n, int status)
{
    printf("%ld %d %ld %ld\n", n, status, file_size(dir, n, "out"), file_size(dir, n, "err"));
}

int main(int argc, char **argv)
{
    unsigned long tmo = 10, as_kib = 0, cpu_s = 0, batch = 1;
    const char *rm_file = NULL;
    int c;
    while ((c = getopt(argc, argv, "t:v:c:r:b:")) != -1) {
        switch (c) {
        case 't': tmo = strtoul(optarg, NULL, 10); break;
        case 'v': as_kib = strtoul(optarg, NULL, 10); break;
        case 'c': cpu_s = strtoul(optarg, NULL, 10); break;
        case 'r': rm_file = optarg; break;
        case 'b': batch = strtoul(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (optind + 1 != argc || !tmo || !batch) {
        fprintf(stderr, "usage: mutant-runner [-t S] [-v KIB] [-c S] [-r FILE] [-b N] DIR < JOBS\n");
        return 2;
    }
    const char *dir = argv[optind];
    /* No SA_RESTART: the alarm interrupts the read of a child's statuses. */
    struct sigaction sa = { .sa_handler = on_alarm };
    sigaction(SIGALRM, &sa, NULL);

    /* Every job is read before the first fork: a child's exit would move
     * the offset of a stdin the two share (glibc rewinds an input file to
     * what its buffer consumed), and the parent would read lines again. */
    char **lines = NULL, *line = NULL;
    size_t cap = 0, nlines = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (line[len - 1] == '\n')
            line[len - 1] = '\0';
        if (!(lines = realloc(lines, (nlines + 1) * sizeof *lines)) ||
            !(lines[nlines++] = strdup(line))) {
            perror("mutant-runner");
            return 2;
        }
    }
    free(line);
    /* Under LeakSanitizer every child's exit scans the globals of every
     * loaded library (~14 MiB in the ASan build, most of it never touched
     * by the program): one scan here first maps those pages in this
     * process, and each fork then copies the mappings instead of every
     * child faulting them in again (a third of a child's fixed cost).  The
     * children's own leak checks are unchanged. */
    if (__lsan_do_recoverable_leak_check)
        __lsan_do_recoverable_leak_check();
    for (size_t n = 0; n < nlines; n++)
        if (!program(lines[n])) {
            fprintf(stderr, "mutant-runner: line %zu: unknown program '%.*s'\n", n + 1,
                    (int)strcspn(lines[n], "\t"), lines[n]);
            return 2;
        }
    for (long n = 0; n < (long)nlines; ) {
        /* up to the next multiple of N: a child that ended early leaves
         * the rest of its group to the next, and the groups stay aligned */
        long end = (n / (long)batch + 1) * (long)batch;
        if (end > (long)nlines)
            end = (long)nlines;
        int done[2];
        if (rm_file && unlink(rm_file) < 0 && errno != ENOENT) {
            perror(rm_file);
            return 2;
        }
        fflush(stdout);
        if (pipe2(done, O_CLOEXEC) < 0) {
            perror("mutant-runner: pipe");
            return 2;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("mutant-runner: fork");
            return 2;
        }
        if (pid == 0) {
            close(done[0]);
            child(lines, n, end, dir, rm_file, done[1], as_kib, cpu_s);
        }
        close(done[1]);
        /* One status a command through the pipe, each within the time
         * limit; end of file: the child ended, in command n. */
        int st = 0;
        ssize_t got;
        do {
            timed_out = 0;
            alarm((unsigned)tmo);
            got = read(done[0], &st, sizeof st);
            alarm(0);
            if (got == (ssize_t)sizeof st)
                report(dir, n++, st);
        } while (got == (ssize_t)sizeof st || (got < 0 && errno == EINTR && !timed_out));
        if (timed_out)
            kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0) {
            if (errno != EINTR) {
                perror("mutant-runner: waitpid");
                return 2;
            }
        }
        close(done[0]);
        report(dir, n++, timed_out ? 124 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    for (size_t i = 0; i < nlines; i++)
        free(lines[i]);
    free(lines);
    return 0;
}
