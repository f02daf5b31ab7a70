// Package sessions keeps vehicle sessions across restarts: it loads the file written by an
// earlier run and writes the live sessions back, atomically, soon after they change and at
// shutdown. A session saved this way lets the first command after a restart skip its handshake,
// which is an upstream call Tesla bills.
//
// The file is vehicle-command's pkg/cache JSON. It holds no private key: each entry is the
// vehicle's public session info (epoch, counter, clock), and the shared key is derived again from
// the command key when it is loaded. It is still written with mode 0600, as it tells which
// vehicles the proxy talks to.
package sessions

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/cache"
	"go.uber.org/zap"
)

// Load reads a session file. A missing file gives nil (start empty); an unreadable or corrupt
// one logs a warning and gives nil too: the proxy must never fail to start because of it.
func Load(path string, log *zap.Logger) *cache.SessionCache {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		log.Warn("session cache unreadable; starting without saved sessions", zap.String("file", path), zap.Error(err))
		return nil
	}
	c, err := cache.Import(bytes.NewReader(data))
	if err != nil || c.Vehicles == nil {
		log.Warn("session cache is not valid; starting without saved sessions", zap.String("file", path), zap.Error(err))
		return nil
	}
	log.Info("loaded saved sessions", zap.String("file", path), zap.Int("vehicles", len(c.Vehicles)))
	return c
}

// Writer saves sessions to a file, at most once per delay while they keep changing.
type Writer struct {
	path     string
	delay    time.Duration
	snapshot func() *cache.SessionCache
	log      *zap.Logger

	mu      sync.Mutex
	timer   *time.Timer
	closed  bool
	writeMu sync.Mutex // one write at a time
}

// NewWriter returns a Writer for path. snapshot returns the sessions to save. delay is how long
// after a change the file is written; zero means 2 s.
func NewWriter(path string, delay time.Duration, snapshot func() *cache.SessionCache, log *zap.Logger) *Writer {
	if delay <= 0 {
		delay = 2 * time.Second
	}
	return &Writer{path: path, delay: delay, snapshot: snapshot, log: log}
}

// Changed notes that sessions changed; the file is written within the delay. It never blocks.
func (w *Writer) Changed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.timer != nil {
		return
	}
	w.timer = time.AfterFunc(w.delay, func() {
		w.mu.Lock()
		w.timer = nil
		w.mu.Unlock()
		if err := w.write(); err != nil {
			w.log.Warn("could not save sessions", zap.String("file", w.path), zap.Error(err))
		}
	})
}

// Close writes the sessions one last time and stops further writes.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.mu.Unlock()
	return w.write()
}

func (w *Writer) write() error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	c := w.snapshot()
	if c == nil {
		return nil
	}
	var buf bytes.Buffer
	if err := c.Export(&buf); err != nil {
		return err
	}
	return WriteFileAtomic(w.path, buf.Bytes(), 0o600)
}

// WriteFileAtomic writes data to path so that a reader sees the old file or the new one, never a
// mix: a temporary file in the same folder, synced, then renamed over path, and the folder synced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if tmp != "" {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	tmp = ""
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
