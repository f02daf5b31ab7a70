package forward

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// The hash that keys tokens (the 421 host memory, the per-client share, the parse cache) is the
// SHA-256 of the token, whatever its length against the buffer it is fed through.
func TestHashTokenIsSHA256(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 512, 2000, 16 << 10} {
		raw := strings.Repeat("eyJhbGciOi.", n/11+1)[:n]
		if got, want := hashToken(raw), TokenHash(sha256.Sum256([]byte(raw))); got != want {
			t.Errorf("%d bytes: hashToken %x, SHA-256 %x", n, got, want)
		}
	}
}

func BenchmarkHashToken(b *testing.B) {
	raw := strings.Repeat("x", 2000) // the size of a real Fleet API token
	b.ReportAllocs()
	for b.Loop() {
		_ = hashToken(raw)
	}
}
