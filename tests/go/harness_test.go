// Shared harness for the real-client compatibility suites.
//
// If SLUICE_BOOTSTRAP is set (host:port, or several comma-separated, e.g. a
// cluster from tests/cluster/cluster.sh), every test talks to those brokers.
// Otherwise the harness starts the Sluice broker itself (binary from SLUICE_BIN, default
// target/release/sluice under the repo root) on free loopback ports, waits for
// it, and kills it when the package's tests are done. A missing binary is a
// test failure, never a skip.
//
// SLUICE_TEST_REPLICATION_FACTOR (default 1) is the replication factor of every
// topic the tests create.
package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	numPartitions  = 4
	numMessages    = 10000
	brokerWaitTime = 30 * time.Second
	// topicReadyWait bounds the wait for a new topic's partitions to be led by
	// their preferred replicas (the first). Kafka elects that one at creation;
	// a Sluice cluster elects any replica first and hands leadership over about
	// ten election timeouts (~10 s) later. The tests wait for it so that they
	// test the steady state, not the handover.
	topicReadyWait = 45 * time.Second
)

var (
	bootstrapAddr string // host:port[,host:port...] every test uses
	setupErr      error  // non-nil when the broker could not be provided
	// replicationFactor is what every topic the tests create asks for.
	replicationFactor = envReplicationFactor()
)

// envReplicationFactor reads SLUICE_TEST_REPLICATION_FACTOR (default 1).
func envReplicationFactor() int {
	v := os.Getenv("SLUICE_TEST_REPLICATION_FACTOR")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 32767 {
		fmt.Fprintf(os.Stderr, "compat: FAIL: SLUICE_TEST_REPLICATION_FACTOR=%q is not a positive number\n", v)
		os.Exit(2)
	}
	return n
}

// brokerList splits a bootstrap string (host:port, comma-separated) into its
// addresses.
func brokerList(addr string) []string {
	var out []string
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// suiteLimit bounds the whole package run: past it the broker is stopped and
// the process exits non-zero (go test's own -timeout would panic without
// stopping the broker).
const suiteLimit = 300 * time.Second

func TestMain(m *testing.M) {
	var once sync.Once
	stopBroker := setup()
	stop := func() { once.Do(stopBroker) }
	watchdog := time.AfterFunc(suiteLimit, func() {
		fmt.Fprintf(os.Stderr, "compat: FAIL: suite still running after %s; stopping the broker\n", suiteLimit)
		stop()
		os.Exit(3)
	})
	code := m.Run()
	watchdog.Stop()
	stop()
	os.Exit(code)
}

// bootstrap returns the broker address or fails the test with the setup error.
func bootstrap(t *testing.T) string {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("broker not available: %v", setupErr)
	}
	return bootstrapAddr
}

func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) { // e.g. built with -trimpath; go test runs in the package dir
		wd, _ := os.Getwd()
		return filepath.Clean(filepath.Join(wd, "..", ".."))
	}
	// this file is <root>/tests/go/harness_test.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func setup() (stop func()) {
	if addr := os.Getenv("SLUICE_BOOTSTRAP"); addr != "" {
		bootstrapAddr = addr
		fmt.Fprintf(os.Stderr, "compat: using existing broker(s) at %s (SLUICE_BOOTSTRAP), replication factor %d\n",
			addr, replicationFactor)
		return func() {}
	}

	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(), "target", "release", "sluice")
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		setupErr = fmt.Errorf("sluice binary not found at %q: run `cargo build --release -p sluice-broker` "+
			"(or set SLUICE_BIN, or point SLUICE_BOOTSTRAP at a running broker)", bin)
		fmt.Fprintln(os.Stderr, "compat: FAIL:", setupErr)
		return func() {}
	}

	port, err1 := freePort()
	adminPort, err2 := freePort()
	for i := 0; i < 10 && err1 == nil && err2 == nil && adminPort == port; i++ {
		adminPort, err2 = freePort()
	}
	if err := errors.Join(err1, err2); err != nil {
		setupErr = fmt.Errorf("finding free ports: %w", err)
		return func() {}
	}
	dataDir, err := os.MkdirTemp("", "sluice-go-compat-")
	if err != nil {
		setupErr = err
		return func() {}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	logPath := filepath.Join(dataDir, "broker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		setupErr = err
		return func() {}
	}
	cmd := exec.Command(bin, "start",
		"--listen", addr,
		"--advertised-listener", addr,
		"--admin-listen", adminAddr,
		"--data-dir", filepath.Join(dataDir, "data"),
		"--cores", "2",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group; and SIGKILL the broker if this test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		setupErr = fmt.Errorf("starting %s: %w", bin, err)
		logFile.Close()
		return func() {}
	}
	var exited atomic.Bool
	waitDone := make(chan struct{})
	go func() { _ = cmd.Wait(); exited.Store(true); close(waitDone) }()

	stop = func() {
		if !exited.Load() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-waitDone:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-waitDone
			}
		}
		logFile.Close()
		if os.Getenv("SLUICE_KEEP_DATA") == "" {
			_ = os.RemoveAll(dataDir)
		} else {
			fmt.Fprintf(os.Stderr, "compat: broker data and log kept in %s\n", dataDir)
		}
	}

	deadline := time.Now().Add(brokerWaitTime)
	for {
		if exited.Load() {
			setupErr = fmt.Errorf("sluice exited before listening on %s; log:\n%s", addr, tail(logPath))
			return stop
		}
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			setupErr = fmt.Errorf("sluice did not listen on %s within %s; log:\n%s", addr, brokerWaitTime, tail(logPath))
			return stop
		}
		time.Sleep(100 * time.Millisecond)
	}
	bootstrapAddr = addr
	fmt.Fprintf(os.Stderr, "compat: started %s on %s (admin %s)\n", bin, addr, adminAddr)
	return stop
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// ---------------------------------------------------------------------------
// Test data shared by both client suites.

type hdr struct {
	Key   string
	Value []byte
}

type testMsg struct {
	Index   int
	Key     []byte
	Value   []byte
	Headers []hdr
	TsMilli int64
}

// makeMessages builds n keyed messages, each with two headers and an explicit,
// strictly increasing millisecond timestamp starting at base.
func makeMessages(n int, base int64) []testMsg {
	msgs := make([]testMsg, n)
	for i := range msgs {
		msgs[i] = testMsg{
			Index: i,
			Key:   []byte(fmt.Sprintf("key-%06d", i)),
			Value: []byte(fmt.Sprintf("value-%06d-%s", i, bytes.Repeat([]byte{'a' + byte(i%26)}, 20+i%50))),
			Headers: []hdr{
				{Key: "seq", Value: []byte(strconv.Itoa(i))},
				{Key: "bin", Value: []byte{byte(i), byte(i >> 8), 0x00, 0xff}},
			},
			TsMilli: base + int64(i),
		}
	}
	return msgs
}

// baseTimestamp is one hour in the past, whole milliseconds, so that brokers'
// future-timestamp checks and time-based retention both leave it alone.
func baseTimestamp() int64 {
	return time.Now().Add(-time.Hour).UnixMilli()
}

func uniqueTopic(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

// waitFor polls cond every interval until it returns nil or the timeout passes.
func waitFor(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// firstAtOrAfter returns the index in msgs (sorted by timestamp) of the first
// message with timestamp >= ts, or len(msgs).
func firstAtOrAfter(msgs []testMsg, ts int64) int {
	for i, m := range msgs {
		if m.TsMilli >= ts {
			return i
		}
	}
	return len(msgs)
}

// phaseTimer returns a function that logs how long the previous phase took.
func phaseTimer(t *testing.T) func(next string) {
	t.Helper()
	last, name := time.Now(), "setup"
	return func(next string) {
		t.Logf("phase %-28s %s", name, time.Since(last).Round(time.Millisecond))
		last, name = time.Now(), next
	}
}
