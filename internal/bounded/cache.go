// Package bounded holds Cache, an LRU map bounded by entry count and by bytes, whose entries
// expire. It is for anything the proxy keys by client input (token hashes, VINs): an attacker
// who sends endless distinct keys can only push out older entries, never grow memory.
package bounded

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// EntryOverhead is what Cache charges each entry on top of the size its SizeFunc reports: the
// list element, map slot and expiry time the LRU keeps for it (measured at about 100 bytes on
// 64-bit platforms; rounded up).
const EntryOverhead = 128

// Cache is a thread-safe LRU bounded by count and bytes, with a time to live per entry. Expired
// entries are dropped when they are looked up or pushed out, so no goroutine runs for it
// (golang-lru's expirable LRU starts one that never ends). The zero value is not usable; call New.
type Cache[K comparable, V any] struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[K, entry[V]]
	ttl      time.Duration
	maxBytes int64
	bytes    int64
	size     func(K, V) int64
	now      func() time.Time
}

type entry[V any] struct {
	v       V
	expires time.Time
	size    int64
}

// New returns a Cache of at most maxEntries entries and maxBytes bytes (each entry counted as
// size(k, v) + EntryOverhead), whose entries live for ttl after they were last added.
func New[K comparable, V any](maxEntries int, maxBytes int64, ttl time.Duration, size func(K, V) int64) *Cache[K, V] {
	c := &Cache[K, V]{ttl: ttl, maxBytes: maxBytes, size: size, now: time.Now}
	l, err := simplelru.NewLRU[K, entry[V]](maxEntries, func(_ K, e entry[V]) { c.bytes -= e.size })
	if err != nil {
		panic("bounded: " + err.Error()) // maxEntries <= 0: a programming error
	}
	c.lru = l
	return c
}

// Get returns the value for k if it is there and has not expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(k)
	if !ok {
		var zero V
		return zero, false
	}
	if !c.now().Before(e.expires) {
		c.lru.Remove(k)
		var zero V
		return zero, false
	}
	return e.v, true
}

// Add stores v under k for the cache's time to live, pushing out the least recently used
// entries while the cache is over its count or byte bound. A value larger than the whole byte
// bound is not stored.
func (c *Cache[K, V]) Add(k K, v V) {
	n := int64(EntryOverhead)
	if c.size != nil {
		n += c.size(k, v)
	}
	if n > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(k)
	c.lru.Add(k, entry[V]{v: v, expires: c.now().Add(c.ttl), size: n})
	c.bytes += n
	for c.bytes > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Remove drops k.
func (c *Cache[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(k)
}

// Len returns the number of entries held, expired ones not yet dropped included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Bytes returns the bytes charged for the entries held.
func (c *Cache[K, V]) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
