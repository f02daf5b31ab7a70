package jws

import (
	"crypto/elliptic"
	"math/big"
	"testing"
)

// TestGroupOrder checks the hard-coded n that bounds r against the curve parameters the standard
// library publishes.
func TestGroupOrder(t *testing.T) {
	if got, want := new(big.Int).SetBytes(groupOrder[:]), elliptic.P256().Params().N; got.Cmp(want) != 0 {
		t.Errorf("groupOrder = %x, want %x", got, want)
	}
}
