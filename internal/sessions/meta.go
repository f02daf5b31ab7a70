package sessions

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// metaBucket holds small values other parts of the proxy keep across restarts beside the
// sessions (such as the month's estimated Fleet API spend), by key.
var metaBucket = []byte("meta")

// GetMeta returns the value saved under key in the file. A Store without a file has none.
func (s *Store) GetMeta(key string) ([]byte, bool) {
	if s.db == nil {
		return nil, false
	}
	var out []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(metaBucket); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				out = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return out, out != nil
}

// PutMeta saves value under key in the file, now, in its own transaction: for values that change
// rarely. A Store without a file keeps nothing and returns nil.
func (s *Store) PutMeta(key string, value []byte) error {
	if s.db == nil {
		return nil
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("sessions: the store is closed")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	})
}
