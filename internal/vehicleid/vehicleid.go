// Package vehicleid resolves the Fleet API's numeric vehicle ids to VINs. Signed commands must
// name the car by VIN (the vehicle checks it inside the signed message), while apps written for
// the older REST API often hold the numeric id. The vehicle list (GET /api/1/vehicles, free as
// third parties report, fleet-api.md §7) gives both; a Resolver reads it with the caller's own
// token and remembers what it read, per token, bounded and with a lifetime.
//
// Entries are keyed by the token's hash, not by its unverified "sub" claim: anyone can forge a
// claim, and the id → VIN map of one account must never answer for another.
package vehicleid

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/bounded"
	"github.com/teslaproxy/proxy/internal/forward"
)

// Bounds and lifetimes. A numeric id names the same car for as long as the account has it, so an
// hour is safe; a token whose list was read moments ago is not asked again for an id it did not
// have (a typo must not become a stream of list calls).
const (
	maxEntries = 100_000
	maxBytes   = 16 << 20
	idTTL      = time.Hour
	listedTTL  = time.Minute
	// maxPages bounds how many pages of the vehicle list one lookup reads.
	maxPages = 10
)

// Options configures a Resolver.
type Options struct {
	// Forward carries the vehicle-list calls with the caller's token.
	Forward *forward.Forwarder
	// OnLookup, when not nil, is told about each id resolved, and whether from the cache.
	OnLookup func(cached bool)
}

// Resolver maps numeric vehicle ids to VINs. It is safe for concurrent use.
type Resolver struct {
	fwd      *forward.Forwarder
	onLookup func(bool)
	vins     *bounded.Cache[key, string]
	// listed holds the tokens whose vehicle list was read within listedTTL.
	listed *bounded.Cache[forward.TokenHash, struct{}]
	// lists makes concurrent lookups of one token share one list read.
	lists singleflight.Group
}

type key struct {
	tok forward.TokenHash
	id  string
}

// New returns a Resolver.
func New(o Options) *Resolver {
	return &Resolver{
		fwd:      o.Forward,
		onLookup: o.OnLookup,
		vins: bounded.New[key, string](maxEntries, maxBytes, idTTL,
			func(k key, vin string) int64 { return int64(len(k.tok) + len(k.id) + len(vin)) }),
		listed: bounded.New[forward.TokenHash, struct{}](maxEntries, maxBytes, listedTTL,
			func(k forward.TokenHash, _ struct{}) int64 { return int64(len(k)) }),
	}
}

// IsNumeric reports whether tag is a plausible numeric vehicle id rather than a VIN: a positive
// 64-bit integer written without leading zeros, not 17 characters long (17 characters is a VIN's
// length, and a VIN may be all digits). Anything else is left to the VIN checks.
func IsNumeric(tag string) bool {
	if tag == "" || tag[0] == '0' || len(tag) == 17 || len(tag) > 19 {
		return false
	}
	n, err := strconv.ParseInt(tag, 10, 64)
	return err == nil && n > 0
}

// ReplyError is the Fleet API's answer below 500 to the vehicle-list call (a refused token, a
// rate limit), for the caller to relay as it came.
type ReplyError struct {
	Reply *forward.Reply
}

// Error says what the Fleet API answered.
func (e *ReplyError) Error() string {
	return fmt.Sprintf("the Fleet API answered %d to the vehicle list", e.Reply.Status)
}

// VIN returns the VIN of the car with numeric id id in the vehicle list of the token in ctx (see
// forward.WithToken). An id the list does not have gives a 404 *apierr.Error that names it.
func (r *Resolver) VIN(ctx context.Context, id string) (string, error) {
	tok := forward.TokenFrom(ctx)
	if tok == nil {
		return "", apierr.New(http.StatusUnauthorized, "missing_token", "This request needs an 'Authorization: Bearer <token>' header.")
	}
	k := key{tok: tok.Hash, id: id}
	if vin, ok := r.vins.Get(k); ok {
		r.lookedUp(true)
		return vin, nil
	}
	if _, ok := r.listed.Get(tok.Hash); !ok {
		// One read of the list per token at a time; the others wait for it.
		ch := r.lists.DoChan(hex.EncodeToString(tok.Hash[:]), func() (any, error) {
			return nil, r.readList(context.WithoutCancel(ctx), tok.Hash)
		})
		select {
		case res := <-ch:
			if res.Err != nil {
				return "", res.Err
			}
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if vin, ok := r.vins.Get(k); ok {
			r.lookedUp(false)
			return vin, nil
		}
	}
	return "", apierr.New(http.StatusNotFound, "vehicle_not_found",
		fmt.Sprintf("No vehicle with id %s is in this token's vehicle list (GET /api/1/vehicles); use the vehicle's 17-character VIN, or an id from that list.", id))
}

func (r *Resolver) lookedUp(cached bool) {
	if r.onLookup != nil {
		r.onLookup(cached)
	}
}

// page is the part of a vehicle-list page the Resolver reads.
type page struct {
	Response []struct {
		ID  json.Number `json:"id"`
		IDS string      `json:"id_s"`
		VIN string      `json:"vin"`
	} `json:"response"`
	Pagination struct {
		Next *json.Number `json:"next"`
	} `json:"pagination"`
}

// readList reads the token's vehicle list and remembers every id in it.
func (r *Resolver) readList(ctx context.Context, tok forward.TokenHash) error {
	path := "/api/1/vehicles"
	for n := 0; n < maxPages; n++ {
		reply, err := r.fwd.Call(ctx, http.MethodGet, path, nil, nil)
		if err != nil {
			return err
		}
		if reply.Status != http.StatusOK {
			if reply.Status < 500 {
				return &ReplyError{Reply: reply}
			}
			return apierr.New(http.StatusBadGateway, "upstream_error",
				fmt.Sprintf("The Fleet API answered %d to the vehicle list, which the proxy reads to find the VIN of a numeric vehicle id; the command was not sent. Try again later, or use the VIN.", reply.Status))
		}
		var p page
		if err := json.Unmarshal(reply.Body, &p); err != nil {
			return apierr.Wrap(err, http.StatusBadGateway, "invalid_upstream_answer",
				"The Fleet API's vehicle list could not be read, so the numeric vehicle id could not be turned into a VIN; the command was not sent. Use the VIN.")
		}
		for _, v := range p.Response {
			if v.VIN == "" {
				continue
			}
			for _, id := range []string{v.IDS, v.ID.String()} {
				if IsNumeric(id) {
					r.vins.Add(key{tok: tok, id: id}, v.VIN)
				}
			}
		}
		if p.Pagination.Next == nil || p.Pagination.Next.String() == "" {
			break
		}
		path = "/api/1/vehicles?page=" + p.Pagination.Next.String()
	}
	r.listed.Add(tok, struct{}{})
	return nil
}
