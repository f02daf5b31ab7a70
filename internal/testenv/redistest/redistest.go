// Package redistest starts a real redis-server (Debian's package) for tests, on a free loopback
// port with persistence off, and stops it when the test ends.
//
// Outside CI (the CI environment variable unset) a test is skipped, with a message saying what to
// install, when redis-server is not on PATH; in CI it fails instead, so the tests cannot pass
// without running.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server process started for one test.
type Server struct {
	// Addr is 127.0.0.1:port.
	Addr string
	t    testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary returns the path of name on PATH. Without it, it skips t outside CI and fails t in CI.
func Binary(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed (apt-get install -y %s, or run scripts/test.sh as root)", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI must run this test", msg)
	}
	t.Skip(msg)
	return ""
}

// Start starts a redis-server on a free loopback port and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t, "redis-server", "redis-server")}
	s.port = FreePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// URL returns redis://127.0.0.1:port/0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

func (s *Server) start() {
	s.t.Helper()
	// s.bin is the redis-server found on PATH by Start; the arguments are fixed here.
	cmd := exec.Command(s.bin, "--save", "", "--appendonly", "no", "--port", strconv.Itoa(s.port), //nolint:gosec // G204: see above
		"--bind", "127.0.0.1", "--protected-mode", "yes", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	for i := 0; ; i++ {
		if s.ping() {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("redis-server on port %d exited at start", s.port)
		default:
		}
		if i > 500 {
			s.t.Fatalf("redis-server on port %d did not answer PING", s.port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping reports whether the server answers PING.
func (s *Server) ping() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Stop kills the server (as a crash would) and waits for it to end. It may be called again.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Pause stops the server's process (SIGSTOP): connections stay open and nothing answers, as
// with a Redis that hangs. Resume undoes it.
func (s *Server) Pause() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
