package sessions

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/teslamotors/vehicle-command/pkg/cache"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// DefaultSize is how many cars' sessions a Store keeps when Options.Size is zero: a million cars
// at a few hundred bytes each (see the README for the measured figure).
const DefaultSize = 1_000_000

// Options configures a Store.
type Options struct {
	// Path is the session file. Empty means memory only.
	Path string
	// Size bounds how many cars' Records are kept; the least recently used is dropped first.
	// Zero means DefaultSize.
	Size int
	// FlushDelay is how long after a change the file is written, so that changes within it go
	// out in one transaction. Zero means 200 ms.
	FlushDelay time.Duration
	// Logger receives warnings about the file; nil means none.
	Logger *zap.Logger
}

// Store keeps Records in memory, bounded and least recently used first out, and, with a file,
// on disk. It is safe for concurrent use; every method is O(1) in the number of cars (Open
// and Close excepted).
type Store struct {
	cache *lru.Cache[string, Record]
	db    *bolt.DB
	delay time.Duration
	log   *zap.Logger

	mu      sync.Mutex
	dirty   map[string]*Record // nil value: delete from the file
	closed  bool
	kick    chan struct{}
	stop    chan struct{} // closed by Close
	flushed chan struct{} // closed when the flushing goroutine ends
	writeMu sync.Mutex    // one file transaction at a time
}

var bucket = []byte("sessions")

// Open returns a Store. With a Path, it loads the Records saved there (converting a JSON file
// written by earlier versions, and setting aside a file it cannot read, with a warning), and
// fails only if the file cannot be opened or created at all, or another process holds it.
func Open(o Options) (*Store, error) {
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.FlushDelay <= 0 {
		o.FlushDelay = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Store{delay: o.FlushDelay, log: o.Logger, dirty: make(map[string]*Record)}
	c, err := lru.NewWithEvict[string, Record](o.Size, s.evicted)
	if err != nil {
		return nil, err
	}
	s.cache = c
	if o.Path == "" {
		return s, nil
	}
	if err := s.openFile(o.Path); err != nil {
		return nil, err
	}
	s.kick = make(chan struct{}, 1)
	s.stop = make(chan struct{})
	s.flushed = make(chan struct{})
	go s.flushLoop()
	return s, nil
}

// Get returns vin's Record, and marks it used.
func (s *Store) Get(vin string) (Record, bool) { return s.cache.Get(vin) }

// Peek returns vin's Record without marking it used.
func (s *Store) Peek(vin string) (Record, bool) { return s.cache.Peek(vin) }

// Put stores vin's Record (an empty one removes it) and, with a file, queues it for writing.
func (s *Store) Put(vin string, r Record) {
	if r.Empty() {
		s.cache.Remove(vin)
		s.mark(vin, nil)
		return
	}
	s.cache.Add(vin, r)
	s.mark(vin, &r)
}

// Len returns how many cars' Records are held.
func (s *Store) Len() int { return s.cache.Len() }

// evicted is the cache's callback for a Record it dropped to make room: drop it from the file
// too, so that the file holds what memory holds.
func (s *Store) evicted(vin string, _ Record) { s.mark(vin, nil) }

func (s *Store) mark(vin string, r *Record) {
	if s.db == nil {
		return
	}
	s.mu.Lock()
	if !s.closed {
		s.dirty[vin] = r
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// flushLoop writes what changed, at most once per delay while changes keep coming, until Close.
func (s *Store) flushLoop() {
	defer close(s.flushed)
	for {
		select {
		case <-s.kick:
		case <-s.stop:
			return
		}
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
		if err := s.Flush(); err != nil {
			s.log.Warn("could not save sessions", zap.String("file", s.db.Path()), zap.Error(err))
		}
	}
}

// Flush writes every queued change to the file now, in one transaction.
func (s *Store) Flush() error {
	if s.db == nil {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	batch := s.dirty
	s.dirty = make(map[string]*Record, len(batch))
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for vin, r := range batch {
			if r == nil {
				if err := b.Delete([]byte(vin)); err != nil {
					return err
				}
				continue
			}
			v, err := r.MarshalBinary()
			if err != nil {
				return err
			}
			if err := b.Put([]byte(vin), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Put the batch back (newer changes win), so the next flush tries again.
		s.mu.Lock()
		for vin, r := range batch {
			if _, newer := s.dirty[vin]; !newer {
				s.dirty[vin] = r
			}
		}
		s.mu.Unlock()
	}
	return err
}

// Close writes what is queued and closes the file. The Store keeps answering from memory, but
// writes no more.
func (s *Store) Close() error {
	if s.db == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.flushed
	err := s.Flush()
	return errors.Join(err, s.db.Close())
}

// openFile opens (or creates) the bbolt file at path and loads it, converting a JSON file.
func (s *Store) openFile(path string) error {
	kind, err := sniff(path)
	if err != nil {
		return err
	}
	var imported map[string]Record
	switch kind {
	case fileJSON:
		imported = s.importJSON(path)
		backup := path + ".v1.json"
		if err := os.Rename(path, backup); err != nil {
			return fmt.Errorf("session file %s: set the old JSON file aside: %w", path, err)
		}
		s.log.Info("converting the JSON session file to the new format; the old file is kept", zap.String("file", path), zap.String("old", backup), zap.Int("vehicles", len(imported)))
	case fileOther:
		s.setAside(path, "is not a session file")
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("session file %s is in use by another process (a second proxy?); give each proxy its own file", path)
	}
	if err != nil && kind == fileBolt {
		// A damaged file: keep it for inspection and start a new one.
		s.setAside(path, err.Error())
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	}
	if err != nil {
		return fmt.Errorf("session file %s: %w", path, err)
	}
	s.db = db
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		_ = db.Close()
		return fmt.Errorf("session file %s: %w", path, err)
	}
	for vin, r := range imported {
		s.Put(vin, r)
	}
	return s.load()
}

// load reads every Record in the file into memory, skipping (and deleting) the ones that could
// not authorize a command now.
func (s *Store) load() error {
	now := time.Now()
	var bad [][]byte
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var r Record
			// A record that does not decode or fails its sanity checks is dropped below, not
			// fatal: one bad entry must not stop the proxy from loading the rest.
			if valid := r.UnmarshalBinary(v) == nil && r.sanitize(now); !valid {
				bad = append(bad, bytes.Clone(k))
				return nil
			}
			s.cache.Add(string(k), r)
			n++
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("session file %s: %w", s.db.Path(), err)
	}
	if len(bad) > 0 {
		s.log.Warn("dropped saved sessions that cannot be used (damaged, or with a time in the future); those vehicles get a new handshake", zap.String("file", s.db.Path()), zap.Int("vehicles", len(bad)))
		s.mu.Lock()
		for _, k := range bad {
			s.dirty[string(k)] = nil
		}
		s.mu.Unlock()
	}
	if n > 0 {
		s.log.Info("loaded saved sessions", zap.String("file", s.db.Path()), zap.Int("vehicles", n))
	}
	return nil
}

// sanitize drops the sessions of r that could not authorize a command at now, and reports
// whether anything is left.
func (r *Record) sanitize(now time.Time) bool {
	for d := range r.Sessions {
		if r.Sessions[d].Valid && !r.Sessions[d].Usable(now) {
			r.Sessions[d] = Session{}
		}
	}
	return !r.Empty()
}

type fileKind int

const (
	fileNone fileKind = iota
	fileBolt
	fileJSON
	fileOther
)

// sniff tells what is at path: nothing (or an empty file), a JSON file of earlier versions, a
// bbolt file (or one that claims to be), or something else.
func sniff(path string) (fileKind, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileNone, nil
	}
	if err != nil {
		return fileNone, fmt.Errorf("session file %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fileNone, fmt.Errorf("session file %s is a directory", path)
	}
	head := make([]byte, 32)
	n, err := io.ReadFull(bufio.NewReader(f), head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fileNone, fmt.Errorf("session file %s: %w", path, err)
	}
	head = bytes.TrimLeft(head[:n], " \t\r\n")
	switch {
	case n == 0:
		return fileNone, nil
	case len(head) > 0 && (head[0] == '{' || head[0] == '['):
		return fileJSON, nil
	case n >= 20 && isBoltMagic(head[16:20]):
		return fileBolt, nil
	default:
		return fileOther, nil
	}
}

// isBoltMagic reports whether b is bbolt's meta-page magic number, in either byte order.
func isBoltMagic(b []byte) bool {
	return bytes.Equal(b, []byte{0xED, 0xDA, 0x0C, 0xED}) || bytes.Equal(b, []byte{0xED, 0x0C, 0xDA, 0xED})
}

// setAside renames an unusable session file so a new one can take its place, with a warning.
func (s *Store) setAside(path, why string) {
	aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
	if err := os.Rename(path, aside); err != nil {
		s.log.Warn("session file cannot be read and cannot be set aside; starting without saved sessions", zap.String("file", path), zap.String("problem", why), zap.Error(err))
		_ = os.Remove(path)
		return
	}
	s.log.Warn("session file cannot be read; set it aside and starting without saved sessions", zap.String("file", path), zap.String("kept_as", filepath.Base(aside)), zap.String("problem", why))
}

// importJSON reads the JSON session file of earlier versions (vehicle-command's pkg/cache
// format). Its clock is whole seconds, so time zero comes out to within a second, once; from
// then on the Record carries it exactly. Entries that could not authorize a command now (a
// created_at in the future, a clock beyond the protocol's range) are left out.
func (s *Store) importJSON(path string) map[string]Record {
	f, err := os.Open(path)
	if err != nil {
		s.log.Warn("old session file unreadable; starting without saved sessions", zap.String("file", path), zap.Error(err))
		return nil
	}
	defer f.Close()
	c, err := cache.Import(f)
	if err != nil || c.Vehicles == nil {
		s.log.Warn("old session file is not valid JSON session data; starting without saved sessions", zap.String("file", path), zap.Error(err))
		return nil
	}
	now := time.Now()
	out := make(map[string]Record, len(c.Vehicles))
	dropped := 0
	for vin, entries := range c.Vehicles {
		var r Record
		for _, e := range entries {
			d, ok := FromProtocolDomain(e.Domain)
			var info signatures.SessionInfo
			if !ok || proto.Unmarshal(e.SessionInfo, &info) != nil || len(info.GetPublicKey()) != 65 || len(info.GetEpoch()) != 16 {
				continue
			}
			ss := Session{Valid: true, Counter: info.GetCounter(), Clock: info.GetClockTime(),
				TimeZero: e.CreatedAt.Add(-time.Duration(info.GetClockTime()) * time.Second).UnixNano()}
			copy(ss.CarKey[:], info.GetPublicKey())
			copy(ss.Epoch[:], info.GetEpoch())
			if !ss.Usable(now) || e.CreatedAt.After(now.Add(time.Minute)) {
				dropped++
				continue
			}
			r.Sessions[d] = ss
		}
		if !r.Empty() {
			out[vin] = r
		}
	}
	if dropped > 0 {
		s.log.Warn("left out saved sessions that cannot be used (a time in the future, or a clock out of range); those vehicles get a new handshake", zap.String("file", path), zap.Int("sessions", dropped))
	}
	return out
}

// FromProtocolDomain maps the protocol's domain number (universal_message.proto: 2 VCSEC, 3
// Infotainment) to a Domain.
func FromProtocolDomain(n int) (Domain, bool) {
	switch n {
	case 2:
		return VCSEC, true
	case 3:
		return Infotainment, true
	}
	return 0, false
}

// ProtocolDomain is the protocol's domain number for d.
func (d Domain) ProtocolDomain() int {
	if d == VCSEC {
		return 2
	}
	return 3
}
