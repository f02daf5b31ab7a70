package bounded

import (
	"fmt"
	"testing"
	"time"
)

func TestCacheBounds(t *testing.T) {
	tests := []struct {
		name       string
		maxEntries int
		maxBytes   int64
		valueLen   int
		wantMaxLen int
	}{
		{"count bound", 10, 1 << 20, 10, 10},
		{"byte bound", 1000, 10 * (EntryOverhead + 100), 100, 10},
		{"value larger than the bound is not stored", 10, 100, 1000, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New[int, []byte](tc.maxEntries, tc.maxBytes, time.Hour, func(_ int, v []byte) int64 { return int64(len(v)) })
			for i := range 500 {
				c.Add(i, make([]byte, tc.valueLen))
				if c.Bytes() > tc.maxBytes {
					t.Fatalf("after %d adds: %d bytes, bound %d", i+1, c.Bytes(), tc.maxBytes)
				}
			}
			if c.Len() != tc.wantMaxLen {
				t.Errorf("Len = %d, want %d", c.Len(), tc.wantMaxLen)
			}
			if tc.wantMaxLen > 0 {
				if _, ok := c.Get(499); !ok {
					t.Errorf("newest entry missing")
				}
				if _, ok := c.Get(0); ok {
					t.Errorf("oldest entry kept")
				}
			}
		})
	}
}

func TestCacheExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New[string, int](10, 1<<20, time.Minute, nil)
	c.now = func() time.Time { return now }
	c.Add("a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get = %v, %v", v, ok)
	}
	now = now.Add(time.Minute)
	if _, ok := c.Get("a"); ok {
		t.Fatalf("entry outlived its time to live")
	}
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Fatalf("expired entry still charged: len %d, bytes %d", c.Len(), c.Bytes())
	}
}

func TestCacheReplaceChargesOnce(t *testing.T) {
	c := New[string, string](10, 1<<20, time.Hour, func(_ string, v string) int64 { return int64(len(v)) })
	for i := range 5 {
		c.Add("k", fmt.Sprint(i))
	}
	if want := int64(EntryOverhead + 1); c.Bytes() != want {
		t.Fatalf("Bytes = %d, want %d", c.Bytes(), want)
	}
}
