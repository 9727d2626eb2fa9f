package workloadtable

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// CachedReviewer remembers TokenReview outcomes briefly, keyed by the
// token's SHA-256 (the token itself is not kept). Proxies reconnect after
// every controller restart or network blip; without a cache each stream
// costs the API server a TokenReview, and a caller cycling through bad
// tokens costs one per attempt. Reviews that do reach the API server are
// rate-limited as a whole.
//
// A token stays accepted for at most TTL after it stops being valid (its
// pod deleted): the same window kube-apiserver's own token cache allows
// (--authentication-token-webhook-cache-ttl defaults to 2m).
type CachedReviewer struct {
	Next TokenReviewer
	// TTL for accepted tokens (default 30s), NegativeTTL for refused ones
	// (default 5s: a token that just became valid is not refused long).
	TTL, NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 4096, ~100 B each).
	MaxEntries int
	// Limit bounds reviews sent to the API server (default 20/s, burst 50);
	// over it a caller gets an error and retries with backoff.
	Limit *rate.Limiter
	Now   func() time.Time

	once          sync.Once
	mu            sync.Mutex
	entries       map[[32]byte]reviewEntry
	inflight      map[[32]byte]*review
	reviews, hits uint64
}

// review is one TokenReview in flight; callers presenting the same token
// meanwhile wait for its answer instead of sending their own (a proxy's
// streams reconnect together, and an attacker could otherwise open N
// streams at once with one token to cost N reviews).
type review struct {
	done     chan struct{}
	user     string
	err      error
	answered bool // false: the caller's context ended, no answer about the token
}

type reviewEntry struct {
	user    string
	err     error
	expires time.Time
}

// ErrReviewRateLimited: the review budget is spent; the caller retries.
var ErrReviewRateLimited = errors.New("token review rate limit reached; retry later")

func (c *CachedReviewer) init() {
	if c.TTL <= 0 {
		c.TTL = 30 * time.Second
	}
	if c.NegativeTTL <= 0 {
		c.NegativeTTL = 5 * time.Second
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 4096
	}
	if c.Limit == nil {
		c.Limit = rate.NewLimiter(20, 50)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.entries = map[[32]byte]reviewEntry{}
	c.inflight = map[[32]byte]*review{}
}

// Review returns a cached outcome, joins a review of the same token in
// flight, or asks Next and caches its answer.
func (c *CachedReviewer) Review(ctx context.Context, token string) (string, error) {
	c.once.Do(c.init)
	key := sha256.Sum256([]byte(token))
	for {
		now := c.Now()
		c.mu.Lock()
		if e, ok := c.entries[key]; ok && now.Before(e.expires) {
			c.hits++
			c.mu.Unlock()
			return e.user, e.err
		}
		if r, ok := c.inflight[key]; ok {
			c.hits++
			c.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if r.answered {
				return r.user, r.err
			}
			continue // its caller gave up: ask again
		}
		r := &review{done: make(chan struct{})}
		c.inflight[key] = r
		c.mu.Unlock()
		return c.ask(ctx, key, token, now, r)
	}
}

// ask sends the review r stands for and publishes its answer.
func (c *CachedReviewer) ask(ctx context.Context, key [32]byte, token string, now time.Time, r *review) (string, error) {
	defer func() {
		c.mu.Lock()
		delete(c.inflight, key)
		c.mu.Unlock()
		close(r.done)
	}()
	if !c.Limit.Allow() {
		r.err, r.answered = ErrReviewRateLimited, true
		return "", ErrReviewRateLimited
	}
	user, err := c.Next.Review(ctx, token)
	r.user, r.err = user, err
	if ctx.Err() != nil {
		return user, err // not an answer about the token
	}
	r.answered = true
	ttl := c.TTL
	if err != nil {
		ttl = c.NegativeTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reviews++
	if len(c.entries) >= c.MaxEntries {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: drop an arbitrary entry
			if len(c.entries) < c.MaxEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = reviewEntry{user: user, err: err, expires: now.Add(ttl)}
	return user, err
}

// Stats returns reviews sent and cache hits.
func (c *CachedReviewer) Stats() (reviews, hits uint64, size int) {
	c.once.Do(c.init)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reviews, c.hits, len(c.entries)
}
