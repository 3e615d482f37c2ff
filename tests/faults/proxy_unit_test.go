package faults

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestProxy checks the RPC proxies against a fake broker: the hello names the source, a
// cut closes that pair's links and holds new ones, and heal lets them through again.
func TestProxy(t *testing.T) {
	// A fake RPC listener for node 2 that echoes: what reaches it comes back.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	dir := t.TempDir()
	p, err := newRPCProxies(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	// Node 1's real listener is never dialled here.
	if err := os.WriteFile(filepath.Join(dir, "rpc"), []byte("127.0.0.1:1\n"+echo.Addr().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// wire::encode(Hello { node_id: 1 }): length 5, magic 0x534c, version 1, kind 1, varint 1.
	hello := []byte{0, 0, 0, 5, 0x53, 0x4c, 1, 1, 1}
	if _, id, err := readHello(bytes.NewReader([]byte{0, 0, 0, 6, 0x53, 0x4c, 1, 1, 0xac, 0x02})); err != nil || id != 300 {
		t.Fatalf("readHello of node 300: %d, %v", id, err)
	}
	if _, _, err := readHello(bytes.NewReader([]byte{0, 0, 0, 65})); err == nil {
		t.Fatal("readHello took a 65-byte first frame")
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", p.addrs()[1], time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(append(hello, 'x')); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// forwarded: the hello and one more byte come back; closed: the read ends.
	forwarded := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, len(hello)+1)
		_, err := io.ReadFull(c, b)
		return err == nil && bytes.Equal(b, append(hello, 'x'))
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	c1 := dial()
	defer c1.Close()
	if !forwarded(c1) {
		t.Fatal("a link 1→2 was not forwarded")
	}
	if n := p.isolate(2); n != 1 {
		t.Errorf("isolate closed %d links, want 1", n)
	}
	if !closed(c1) {
		t.Error("a link 1→2 stayed open after the cut")
	}
	c2 := dial()
	defer c2.Close()
	if forwarded(c2) {
		t.Error("a new link 1→2 was forwarded while cut")
	}
	if n := p.heal(); n != 1 {
		t.Errorf("heal counted %d held links, want 1", n)
	}
	if !closed(c2) {
		t.Error("a held link stayed open after heal")
	}
	c3 := dial()
	defer c3.Close()
	if !forwarded(c3) {
		t.Error("a link 1→2 was not forwarded after heal")
	}
}
