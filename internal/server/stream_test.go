package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// patternReader yields n bytes of a repeating pattern without holding them in memory.
type patternReader struct {
	left int64
	off  int
}

// pattern is one period of what patternReader yields (a prime length, so periods do not line up
// with buffer sizes).
var pattern = func() []byte {
	b := make([]byte, 65521)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}()

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) {
		c := copy(b[n:], pattern[p.off:])
		n += c
		p.off = (p.off + c) % len(pattern)
	}
	p.left -= int64(n)
	return n, nil
}

// heapWatch samples the heap while a transfer runs and reports the peak growth over the start.
type heapWatch struct {
	base, peak uint64
	stop       chan struct{}
	done       sync.WaitGroup
}

func watchHeap() *heapWatch {
	// Twice: what an earlier test's connections held is freed only a cycle after their
	// finalizers ran, and would otherwise count as this test's base heap and raise its GC goal.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > h.peak {
					h.peak = ms.HeapInuse
				}
			}
		}
	}()
	return h
}

func (h *heapWatch) growth() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak - h.base
}

// streamSize is 1 GiB, or 64 MiB with -short.
func streamSize() int64 {
	if testing.Short() {
		return 64 << 20
	}
	return 1 << 30
}

// TestStreamsLargeBodiesBothWays pushes 1 GiB up and pulls 1 GiB down through the proxy (TLS on
// both legs) and checks every byte arrived and that the heap grew by less than 32 MiB, so bodies
// are streamed, not buffered.
func TestStreamsLargeBodiesBothWays(t *testing.T) {
	size := streamSize()
	var uploaded atomic.Int64
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			uploaded.Store(n)
			fmt.Fprintf(w, `{"bytes":%d,"sha256":%q}`, n, hex.EncodeToString(h.Sum(nil)))
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, &patternReader{left: size})
	}))
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool})
	token := "Bearer " + testenv.Token(t, map[string]any{"sub": "s"})

	want := sha256.New()
	_, _ = io.Copy(want, &patternReader{left: size})
	wantSum := hex.EncodeToString(want.Sum(nil))

	t.Run("upload", func(t *testing.T) {
		hw := watchHeap()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, env.URL+"/api/1/upload", &patternReader{left: size})
		req.ContentLength = size
		req.Header.Set("Authorization", token)
		start := time.Now()
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		growth := hw.growth()
		if resp.StatusCode != 200 || string(body) != fmt.Sprintf(`{"bytes":%d,"sha256":%q}`, size, wantSum) {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		t.Logf("uploaded %d MiB in %v, heap growth %.1f MiB", size>>20, time.Since(start), float64(growth)/(1<<20))
		if growth > 32<<20 {
			t.Errorf("heap grew by %.1f MiB while streaming; want < 32 MiB", float64(growth)/(1<<20))
		}
	})
	t.Run("download", func(t *testing.T) {
		hw := watchHeap()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, env.URL+"/api/1/download", nil)
		req.Header.Set("Authorization", token)
		start := time.Now()
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		growth := hw.growth()
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != wantSum {
			t.Fatalf("download: %d bytes, err %v", n, err)
		}
		t.Logf("downloaded %d MiB in %v, heap growth %.1f MiB", size>>20, time.Since(start), float64(growth)/(1<<20))
		if growth > 32<<20 {
			t.Errorf("heap grew by %.1f MiB while streaming; want < 32 MiB", float64(growth)/(1<<20))
		}
	})
}
