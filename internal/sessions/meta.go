package sessions

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
)

// metaBucket holds small values other parts of the proxy keep across restarts beside the
// sessions (such as the month's estimated Fleet API spend), by key.
var metaBucket = []byte("meta")

// ErrNoFile is returned by AddFloat on a Store that keeps nothing across restarts.
var ErrNoFile = errors.New("sessions: memory-only store")

// AddFloat adds delta to the number kept under key in the file (zero when absent) and returns the
// new value; a delta of zero reads it. It writes at once, in its own transaction: for values that
// change rarely. A Store without a file returns ErrNoFile.
func (s *Store) AddFloat(_ context.Context, key string, delta float64) (float64, error) {
	if s.db == nil {
		return 0, ErrNoFile
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, errors.New("sessions: the store is closed")
	}
	var total float64
	read := func(b *bolt.Bucket) {
		if b == nil {
			return
		}
		if v, err := strconv.ParseFloat(string(b.Get([]byte(key))), 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
			total = v
		}
	}
	if delta == 0 {
		err := s.db.View(func(tx *bolt.Tx) error {
			read(tx.Bucket(metaBucket))
			return nil
		})
		return total, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		read(b)
		total += delta
		return b.Put([]byte(key), []byte(strconv.FormatFloat(total, 'f', -1, 64)))
	})
	return total, err
}

// metaTTL is how long a value kept in Redis by AddFloat lives after its last change: long enough
// for a monthly figure to outlive its month.
const metaTTL = 62 * 24 * time.Hour

// AddFloat adds delta to the number kept under key in Redis, shared by every replica (zero when
// absent), and returns the new value; a delta of zero reads it. The key lives 62 days after its
// last change.
func (r *Redis) AddFloat(ctx context.Context, key string, delta float64) (float64, error) {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	k := r.prefix + "meta:" + key
	if delta == 0 {
		v, err := r.client.Get(cctx, k).Float64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		return v, nil
	}
	pipe := r.client.TxPipeline()
	incr := pipe.IncrByFloat(cctx, k, delta)
	pipe.Expire(cctx, k, metaTTL)
	if _, err := pipe.Exec(cctx); err != nil {
		return 0, err
	}
	return incr.Val(), nil
}
