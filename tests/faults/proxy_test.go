package faults

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Every broker's inter-broker RPC goes through a proxy here (cluster.sh --rpc-proxies), so
// that the test can cut links between two brokers while clients still reach both.
//
// The RPC's frames (raft/src/rpc/wire.rs) are length:u32 big-endian of what follows, then
// magic:u16 0x534c, version:u8, kind:u8 and a postcard body. The first frame a connecting
// broker sends is Hello (kind 1), whose body is its node id as a postcard varint (LEB128).
// The proxy reads that frame to learn which broker is on the other end of each link.

const (
	// helloMaxBytes bounds the first frame the proxy reads itself: a hello is a header
	// and one varint, so anything longer is not one.
	helloMaxBytes = 64
	rpcMagic      = 0x534c
	rpcKindHello  = 1
	// helloWait bounds the wait for a connecting broker's hello (the broker itself gives
	// up after its 2 s connect timeout).
	helloWait = 5 * time.Second
	// proxyDialTimeout bounds dialling the real RPC listener, like the broker's own.
	proxyDialTimeout = 2 * time.Second
	// proxyStopWait bounds the wait for the proxies' goroutines when the test ends.
	proxyStopWait = 10 * time.Second
)

// rpcProxies are one proxy per broker, listening on loopback, and the partition table
// that decides which links they forward.
type rpcProxies struct {
	dir string // the cluster directory, whose rpc file names the real listeners
	lns []net.Listener
	wg  sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	targets []string            // the real RPC listeners, once read from dir/rpc
	cuts    map[[2]int32]bool   // cut pairs, lower node id first
	links   map[*proxyLink]bool // every open link
	held    int                 // links held since the last heal
}

// proxyLink is one broker's connection to another through a proxy: src connected to the
// proxy of dst. held links belong to a cut pair: their bytes are read and dropped.
type proxyLink struct {
	src, dst int32
	held     bool

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

// add makes c part of the link, closing it at once if the link is closed already.
func (l *proxyLink) add(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns = append(l.conns, c)
	return true
}

func (l *proxyLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, c := range l.conns {
		c.Close()
	}
}

func pairOf(a, b int32) [2]int32 {
	if a > b {
		a, b = b, a
	}
	return [2]int32{a, b}
}

// newRPCProxies listens for n brokers' RPC; the proxy of node i+1 is at addrs()[i]. They
// must listen before cluster.sh starts the brokers, which form the cluster through them;
// the targets are read from dir/rpc when the first link arrives.
func newRPCProxies(dir string, n int) (*rpcProxies, error) {
	p := &rpcProxies{dir: dir, cuts: map[[2]int32]bool{}, links: map[*proxyLink]bool{}}
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.close()
			return nil, err
		}
		p.lns = append(p.lns, ln)
	}
	for i, ln := range p.lns {
		p.wg.Add(1)
		go p.accept(ln, int32(i+1))
	}
	return p, nil
}

func (p *rpcProxies) addrs() []string {
	out := make([]string, len(p.lns))
	for i, ln := range p.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (p *rpcProxies) accept(ln net.Listener, dst int32) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of descriptors: try again
			continue
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.serve(c, dst) }()
	}
}

// target is the real RPC listener of node dst, from the file cluster.sh writes before
// it starts any broker.
func (p *rpcProxies) target(dst int32) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.targets == nil {
		b, err := os.ReadFile(filepath.Join(p.dir, "rpc"))
		if err != nil {
			return "", err
		}
		if ts := strings.Fields(string(b)); len(ts) == len(p.lns) {
			p.targets = ts
		} else {
			return "", fmt.Errorf("%s/rpc names %d addresses, want %d", p.dir, len(ts), len(p.lns))
		}
	}
	return p.targets[dst-1], nil
}

// serve is one connection to dst's proxy: read the hello to learn the source, then
// forward both ways, or hold it while the pair is cut.
func (p *rpcProxies) serve(c net.Conn, dst int32) {
	_ = c.SetDeadline(time.Now().Add(helloWait))
	hello, src, err := readHello(c)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	l := &proxyLink{src: src, dst: dst, conns: []net.Conn{c}}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	// Decided under the lock, so that a cut made from now on closes this link.
	l.held = p.cuts[pairOf(src, dst)]
	if l.held {
		p.held++
	}
	p.links[l] = true
	p.mu.Unlock()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	if l.held {
		// The hello is never answered: the connecting broker times out as it would
		// against a broker it cannot reach. Heal (or the broker giving up) closes it.
		_, _ = io.Copy(io.Discard, c)
		return
	}
	addr, err := p.target(dst)
	if err != nil {
		return
	}
	up, err := net.DialTimeout("tcp", addr, proxyDialTimeout)
	if err != nil || !l.add(up) {
		return
	}
	if _, err := up.Write(hello); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	l.close() // ends the other direction
	<-done
}

// readHello reads the first frame of a connection, which must be a Hello, and returns its
// bytes (length prefix included, to forward as they came) and the sender's node id.
func readHello(r io.Reader) ([]byte, int32, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n < 4 || n > helloMaxBytes {
		return nil, 0, fmt.Errorf("first frame of %d bytes is no hello", n)
	}
	frame := make([]byte, 4+n)
	copy(frame, prefix[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		return nil, 0, err
	}
	body := frame[4:]
	if m := binary.BigEndian.Uint16(body[:2]); m != rpcMagic {
		return nil, 0, fmt.Errorf("bad magic %#06x", m)
	}
	if body[3] != rpcKindHello {
		return nil, 0, fmt.Errorf("first frame of kind %d is no hello", body[3])
	}
	id, k := binary.Uvarint(body[4:])
	if k <= 0 || id < 1 || id > 1<<31-1 {
		return nil, 0, fmt.Errorf("hello with no usable node id (% x)", body[4:])
	}
	return frame, int32(id), nil
}

// cut stops every link between a and b, both ways: open ones are closed, and new ones
// are held (their hello read, nothing forwarded) until heal. It returns how many it closed.
func (p *rpcProxies) cut(a, b int32) int {
	pair := pairOf(a, b)
	p.mu.Lock()
	p.cuts[pair] = true
	var open []*proxyLink
	for l := range p.links {
		if !l.held && pairOf(l.src, l.dst) == pair {
			open = append(open, l)
		}
	}
	p.mu.Unlock()
	for _, l := range open {
		l.close()
	}
	return len(open)
}

// isolate cuts node from every other broker; it returns how many open links it closed.
func (p *rpcProxies) isolate(node int32) int {
	closed := 0
	for i := range p.lns {
		if other := int32(i + 1); other != node {
			closed += p.cut(node, other)
		}
	}
	return closed
}

// heal removes every cut and closes the held links, so that their brokers reconnect
// through a forwarding link. It returns how many links were held since the last heal.
func (p *rpcProxies) heal() int {
	p.mu.Lock()
	p.cuts = map[[2]int32]bool{}
	n := p.held
	p.held = 0
	var held []*proxyLink
	for l := range p.links {
		if l.held {
			held = append(held, l)
		}
	}
	p.mu.Unlock()
	for _, l := range held {
		l.close()
	}
	return n
}

// close stops the listeners and every link and waits (bounded) for their goroutines.
func (p *rpcProxies) close() {
	p.mu.Lock()
	p.closed = true
	links := make([]*proxyLink, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, ln := range p.lns {
		ln.Close()
	}
	for _, l := range links {
		l.close()
	}
	waitGroup(&p.wg, proxyStopWait)
}
