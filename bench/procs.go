package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a proxy running as its own process, so that its CPU time and memory can be read from
// /proc apart from the load generator's and the simulator's.
type child struct {
	name    string
	bin     string
	dir     string
	args    []string
	cmd     *exec.Cmd
	pid     int
	url     string
	logPath string
	done    chan struct{}
	waitErr error
}

// listeningRE finds the listen URL both proxies log on start (ours as a JSON log line).
var listeningRE = regexp.MustCompile(`listening on (https://127\.0\.0\.1:[0-9]+)`)

// goBuild builds pkg (relative to the module root) into out.
func goBuild(root, pkg, out string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// childEnv is the environment without settings that could change what a proxy does: its own
// TESLA_* variables and outbound proxies.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		uk := strings.ToUpper(k)
		if strings.HasPrefix(uk, "TESLA_") || strings.HasSuffix(uk, "_PROXY") || strings.HasPrefix(uk, "GODEBUG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startChild runs bin with args, its stderr into a log file in dir, and waits for the
// "listening on" line.
func startChild(name, bin, dir string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	if name == "ours" {
		// BENCH_OURS_ENV="GODEBUG=http2client=0" runs our proxy alone with extra settings, to
		// compare its HTTP/1.1 and HTTP/2 upstreams in one harness (docs/benchmarks.md).
		cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("BENCH_OURS_ENV"))...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c := &child{name: name, bin: bin, dir: dir, args: args, cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if m := listeningRE.FindSubmatch(b); m != nil {
			c.url = string(m[1])
			return c, nil
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("%s exited before listening (%w): %s", name, c.waitErr, tail(b, 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.stop()
	return nil, fmt.Errorf("%s did not log a listen URL within 30 s", name)
}

// stop asks the child to shut down (SIGTERM), then kills it if it has not gone within 5 s.
func (c *child) stop() {
	if c == nil {
		return
	}
	stopProcess(c.cmd, c.done)
}

// stopProcess asks cmd's process to end (SIGTERM), kills it if it is still running after 5 s, and
// returns once done is closed (by the goroutine that waits for the process).
func stopProcess(cmd *exec.Cmd, done <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// restart stops the child and starts it again with the same arguments: a fresh heap.
func (c *child) restart() (*child, error) {
	c.stop()
	return startChild(c.name, c.bin, c.dir, c.args...)
}

// alive reports whether the child is still running.
func (c *child) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// cpu returns the process's user plus system CPU time so far, all threads.
func (c *child) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its closing parenthesis are
	// state (3), ppid (4), …, utime (14), stime (15).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// memory returns VmRSS and VmHWM (peak RSS since start or the last resetPeak) in bytes.
func (c *child) memory() (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s: %w", k, err)
		}
		*dst = kb << 10
	}
	return rss, peak, nil
}

// resetPeak sets VmHWM back to the current RSS (Linux ≥ 4.0: write 5 to clear_refs), so the next
// reading is the peak of what follows.
func (c *child) resetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", c.pid), []byte("5"), 0)
}

// logTail returns the end of the child's log, for error reports.
func (c *child) logTail(n int) string {
	b, _ := os.ReadFile(c.logPath)
	return tail(b, n)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
