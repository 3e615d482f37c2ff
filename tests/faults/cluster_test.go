package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// clusterScriptTimeout bounds one cluster.sh start or restart (the script has its
	// own 90 s readiness bound; this one catches a hung script).
	clusterScriptTimeout = 120 * time.Second
	// processExitWait bounds the wait for a SIGKILLed broker to be gone, so that its
	// data-dir lock is free before it is started again.
	processExitWait = 10 * time.Second
	// testFaultsEnv turns on the broker's test-only fault hooks (the slow disk). It is in
	// the environment of every cluster.sh call, so restarted brokers have it too.
	testFaultsEnv = "SLUICE_TEST_FAULTS=1"
)

// cluster is a 3-broker loopback cluster run by tests/cluster/cluster.sh in dir.
type cluster struct {
	script string
	bin    string
	dir    string
	addrs  []string // Kafka address of node i+1 at index i
}

// repoRoot is the repository root, found from this file's path (tests/faults/...).
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) { // -trimpath; go test runs in the package dir
		wd, _ := os.Getwd()
		return filepath.Clean(filepath.Join(wd, "..", ".."))
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// sluiceBin is $SLUICE_BIN, or target/release/sluice under the repo root; an error
// (not a skip) when it is not an executable file.
func sluiceBin() (string, error) {
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(), "target", "release", "sluice")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("no sluice binary at %s (set SLUICE_BIN, or run cargo build --release -p sluice-broker)", abs)
	}
	return abs, nil
}

// startCluster starts the brokers with their RPC advertised at rpcProxies (one per
// broker, already listening), so that every inter-broker link goes through them.
func startCluster(bin, dir string, brokers int, rpcProxies []string) (*cluster, error) {
	c := &cluster{
		script: filepath.Join(repoRoot(), "tests", "cluster", "cluster.sh"),
		bin:    bin,
		dir:    dir,
	}
	out, err := c.run("start", "--dir", dir, "--brokers", strconv.Itoa(brokers), "--bin", bin,
		"--rpc-proxies", strings.Join(rpcProxies, ","))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, a := range strings.Split(lines[len(lines)-1], ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.addrs = append(c.addrs, a)
		}
	}
	if len(c.addrs) != brokers {
		c.stop()
		return nil, fmt.Errorf("cluster.sh start printed %q, want %d addresses", out, brokers)
	}
	return c, nil
}

// run runs cluster.sh with a time bound and returns its stdout; stderr goes into the error.
func (c *cluster) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterScriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{c.script}, args...)...)
	cmd.Env = append(os.Environ(), testFaultsEnv)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (c *cluster) nodes() []int32 {
	ns := make([]int32, len(c.addrs))
	for i := range ns {
		ns[i] = int32(i + 1)
	}
	return ns
}

func (c *cluster) pid(node int32) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("broker-%d.pid", node)))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("bad pid file for broker %d: %q", node, b)
	}
	return pid, nil
}

// signal sends sig to node's recorded pid, after checking that pid is still a sluice
// process (a stale pid file must never make the test signal something else).
func (c *cluster) signal(node int32, sig syscall.Signal) error {
	pid, err := c.pid(node)
	if err != nil {
		return err
	}
	if !isRunningSluice(pid) {
		return fmt.Errorf("broker %d (pid %d) is not running", node, pid)
	}
	return syscall.Kill(pid, sig)
}

// isRunningSluice: pid exists, is not a zombie (a zombie's cmdline is empty) and is sluice.
func isRunningSluice(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("sluice"))
}

// kill SIGKILLs node and waits (bounded) until its process is gone.
func (c *cluster) kill(node int32) error {
	pid, err := c.pid(node)
	if err != nil {
		return err
	}
	if err := c.signal(node, syscall.SIGKILL); err != nil {
		return err
	}
	deadline := time.Now().Add(processExitWait)
	for isRunningSluice(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("broker %d (pid %d) still running %s after SIGKILL", node, pid, processExitWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// restart starts a killed node again; cluster.sh waits until it serves Metadata.
func (c *cluster) restart(node int32) error {
	_, err := c.run("restart", "--dir", c.dir, "--node", strconv.Itoa(int(node)))
	return err
}

// slowDiskHTTP talks to the admin ports only: no proxy from the environment, no
// connection kept (the broker's admin responder closes each one anyway).
var slowDiskHTTP = &http.Client{
	Timeout:   adminCallTimeout,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// setSyncDelay makes every later fdatasync of node's process wait d (0: none), through
// the admin port's test-only hook; anything but 200 OK is an error.
func (c *cluster) setSyncDelay(node int32, d time.Duration) error {
	b, err := os.ReadFile(filepath.Join(c.dir, "admin"))
	if err != nil {
		return err
	}
	lines := strings.Fields(string(b))
	if node < 1 || int(node) > len(lines) {
		return fmt.Errorf("no admin address for broker %d in %s/admin", node, c.dir)
	}
	url := fmt.Sprintf("http://%s/faults/sync-delay-ms/%d", lines[node-1], d.Milliseconds())
	resp, err := slowDiskHTTP.Get(url)
	if err != nil {
		return fmt.Errorf("broker %d: GET %s: %w", node, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("broker %d: GET %s: %s: %s", node, url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *cluster) pause(node int32) error  { return c.signal(node, syscall.SIGSTOP) }
func (c *cluster) resume(node int32) error { return c.signal(node, syscall.SIGCONT) }

// stop resumes any paused broker (a stopped process would sit out SIGTERM) and stops all.
func (c *cluster) stop() error {
	for _, n := range c.nodes() {
		_ = c.resume(n)
	}
	_, err := c.run("stop", "--dir", c.dir)
	return err
}

// logLines returns the lines of node's log that contain any of the needles (WARN,
// ERROR, ...) and none of skip, at most limit of the last ones, for failure reports.
func (c *cluster) logLines(node int32, limit int, needles, skip []string) []string {
	b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("broker-%d.log", node)))
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
lines:
	for _, l := range strings.Split(string(b), "\n") {
		l = stripANSI(l)
		for _, n := range skip {
			if strings.Contains(l, n) {
				continue lines
			}
		}
		for _, n := range needles {
			if strings.Contains(l, n) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// stripANSI removes the colour escapes the broker's logger writes.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < '@' || s[j] > '~') {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
