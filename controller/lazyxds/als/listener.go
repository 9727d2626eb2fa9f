package als

import (
	"net"
	"sync"
	"sync/atomic"
)

// Listener bounds the connections the server holds: past MaxConnections a
// new connection is closed as soon as it is accepted and counted as
// connection_limit. Streams and messages have their own budgets, but each
// open connection costs ~100 KiB whether or not it ever opens a stream, so
// without this a client could pin memory with idle connections (issue #18).
// golang.org/x/net/netutil.LimitListener blocks Accept instead, which would
// leave the egress's reconnects queued behind an attacker's; closing at
// once lets Envoy retry and makes the flood visible in the metrics.
func (s *Server) Listener(l net.Listener) net.Listener {
	return &limitListener{Listener: l, s: s, max: int64(s.opts.MaxConnections)}
}

type limitListener struct {
	net.Listener
	s    *Server
	max  int64
	open atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			l.s.Refuse(RefusedConnectionLimit, c.RemoteAddr().String())
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
