package helm

// The rendered cluster runs: the StatefulSet `helm template` renders is started on this
// machine, one process per ordinal, as the kubelet would start the pods — the container's own
// command and arguments, the environment the kubelet gives it (downward-API values filled in,
// $(VAR) expanded), its volumes mounted at the paths the pod spec names — with every pod's DNS
// name resolving to a loopback address of its own (127.77.0.N) through a private /etc/hosts
// in a mount namespace of the test's own (the machine's /etc/hosts is never touched). A small
// proxy stands in for the client Service's cluster IP. Then the chart's own `helm test` pod
// runs the same way, and, with SLUICE_RDKAFKA_SUITE=1, the rdkafka client suite runs against
// the client Service's address.
//
//   SLUICE_BIN=target/release/sluice go test -run TestRenderedClusterRuns -v ./...
//
// SLUICE_HELM_RUN_VALUES picks the values file (default ci/3-replicas-values.yaml: the
// chart's default size, three brokers, the rdkafka suite's topics replicated on all three),
// and SLUICE_HELM_RUN_SET comma-separated --set values on top (ci/5-replicas-values.yaml asks
// for 4 CPUs a pod: SLUICE_HELM_RUN_SET=resources.cpu=1). Needs root (mount namespaces,
// overlay and bind mounts).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// Set in the re-executed test process that runs inside its own mount namespace.
	envPrivateNS = "SLUICE_HELM_PRIVATE_NS"
	// Set (to a JSON podLaunch) in a re-executed test binary that becomes one container.
	envLaunch = "SLUICE_HELM_LAUNCH"
	// The client Service's stand-in cluster IP; pod N gets podIPBase + N + 1.
	serviceIP  = "127.77.1.1"
	podIPBase  = "127.77.0."
	runTimeout = 10 * time.Minute
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envLaunch); spec != "" {
		launchContainer(spec) // never returns
	}
	os.Exit(m.Run())
}

// podLaunch is what a re-executed test binary needs to become a container: mounts made in
// its own mount namespace, then the user, then exec.
type podLaunch struct {
	Mounts     []mount  `json:"mounts"`
	OverlayDir string   `json:"overlay_dir"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	UID        int      `json:"uid"`
	GID        int      `json:"gid"`
}

type mount struct {
	Src, Dst string
	ReadOnly bool
}

// launchContainer runs in a fresh mount namespace (the parent set CLONE_NEWNS, and Go made
// every mount private): paths the image would have but this machine lacks are made inside an
// overlay over their nearest existing ancestor, so nothing on the machine changes; then each
// volume is bind-mounted where the pod spec mounts it, and the container's command is exec'd.
func launchContainer(spec string) {
	die := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "pod launcher: "+format+"\n", args...)
		os.Exit(127)
	}
	var l podLaunch
	if err := json.Unmarshal([]byte(spec), &l); err != nil {
		die("bad spec: %v", err)
	}
	overlaid := map[string]bool{}
	for _, m := range l.Mounts {
		if _, err := os.Lstat(m.Dst); err == nil {
			continue
		}
		anc := filepath.Dir(m.Dst)
		for {
			if _, err := os.Stat(anc); err == nil {
				break
			}
			anc = filepath.Dir(anc)
		}
		if overlaid[anc] {
			continue
		}
		overlaid[anc] = true
		dir := filepath.Join(l.OverlayDir, strconv.Itoa(len(overlaid)))
		upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				die("%v", err)
			}
		}
		opts := "lowerdir=" + anc + ",upperdir=" + upper + ",workdir=" + work
		if err := syscall.Mount("overlay", anc, "overlay", 0, opts); err != nil {
			die("overlay on %s: %v", anc, err)
		}
	}
	for _, m := range l.Mounts {
		st, err := os.Stat(m.Src)
		if err != nil {
			die("%v", err)
		}
		if _, err := os.Lstat(m.Dst); err != nil {
			if st.IsDir() {
				err = os.MkdirAll(m.Dst, 0o755)
			} else if err = os.MkdirAll(filepath.Dir(m.Dst), 0o755); err == nil {
				err = os.WriteFile(m.Dst, nil, 0o644)
			}
			if err != nil {
				die("%v", err)
			}
		}
		if err := syscall.Mount(m.Src, m.Dst, "", syscall.MS_BIND, ""); err != nil {
			die("bind %s on %s: %v", m.Src, m.Dst, err)
		}
		if m.ReadOnly {
			flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY)
			if err := syscall.Mount("", m.Dst, "", flags, ""); err != nil {
				die("read-only %s: %v", m.Dst, err)
			}
		}
	}
	if err := syscall.Setgroups(nil); err != nil {
		die("setgroups: %v", err)
	}
	if err := syscall.Setgid(l.GID); err != nil {
		die("setgid: %v", err)
	}
	if err := syscall.Setuid(l.UID); err != nil {
		die("setuid: %v", err)
	}
	if err := os.Chdir("/"); err != nil {
		die("%v", err)
	}
	err := syscall.Exec(l.Argv[0], l.Argv, l.Env)
	die("exec %v: %v", l.Argv, err)
}

// kubeletVars expands $(VAR) as the kubelet does: a defined name is replaced, $$ is a
// literal $, anything else is left as written.
var kubeletVars = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func expand(s string, env map[string]string) string {
	return kubeletVars.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// podIdentity is what the downward API knows about one pod.
type podIdentity struct {
	Name, Namespace, IP, HostIP string
	Labels                      map[string]string
}

// containerEnv is the environment the kubelet would give c in pod p (service links are off
// in the chart, so none are added). Only the downward-API fields the chart uses are known;
// another one fails the test, so the simulation can't silently drift from the chart.
func containerEnv(t *testing.T, c *corev1.Container, p podIdentity) (map[string]string, []string) {
	env := map[string]string{}
	var list []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
			v = expand(v, env)
		case e.ValueFrom.FieldRef != nil:
			path := e.ValueFrom.FieldRef.FieldPath
			switch {
			case path == "metadata.name":
				v = p.Name
			case path == "metadata.namespace":
				v = p.Namespace
			case path == "status.podIP":
				v = p.IP
			case path == "status.hostIP":
				v = p.HostIP
			case strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']"):
				key := strings.TrimSuffix(strings.TrimPrefix(path, "metadata.labels['"), "']")
				var ok bool
				if v, ok = p.Labels[key]; !ok {
					t.Fatalf("env %s: the pod has no label %s", e.Name, key)
				}
			default:
				t.Fatalf("env %s: downward-API field %s is not simulated here: add it", e.Name, path)
			}
		default:
			t.Fatalf("env %s: only values and fieldRefs are simulated here", e.Name)
		}
		env[e.Name] = v
		list = append(list, e.Name+"="+v)
	}
	list = append(list, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME="+p.Name)
	return env, list
}

// proc is one running container.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

type syncWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// cluster is the simulated namespace: the rendering, a scratch directory and the processes.
type cluster struct {
	t       *testing.T
	r       *Rendered
	work    string
	sluice  string
	procs   []*proc
	podIPs  []string
	overlay int
	// endpoints is how many pods (the lowest ordinals) the client Service reaches: all,
	// until a scale-down removes the highest.
	endpointsMu sync.Mutex
	endpoints   int
}

// start launches container c of pod p through a re-executed test binary in a mount
// namespace of its own.
func (cl *cluster) start(p podIdentity, spec *corev1.PodSpec, c *corev1.Container, volumes map[string]string, uid, gid int) *proc {
	t := cl.t
	env, envList := containerEnv(t, c, p)
	var argv []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		x := expand(a, env)
		if strings.Contains(x, "$(") {
			t.Fatalf("%s/%s: %q still has an unexpanded $(VAR) after the kubelet's expansion", p.Name, c.Name, a)
		}
		argv = append(argv, x)
	}
	if len(argv) == 0 || argv[0] != "/usr/bin/sluice" {
		t.Fatalf("%s/%s: command %v: the image's binary is /usr/bin/sluice", p.Name, c.Name, argv)
	}
	mounts := []mount{{Src: cl.sluice, Dst: "/usr/bin/sluice", ReadOnly: true}}
	for _, vm := range c.VolumeMounts {
		src, ok := volumes[vm.Name]
		if !ok {
			t.Fatalf("%s/%s mounts volume %q, which the pod does not have", p.Name, c.Name, vm.Name)
		}
		mounts = append(mounts, mount{Src: src, Dst: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	// Last, so an overlay over /etc cannot hide it.
	mounts = append(mounts, mount{Src: filepath.Join(cl.work, "hosts"), Dst: "/etc/hosts", ReadOnly: true})
	cl.overlay++
	spec2 := podLaunch{
		Mounts:     mounts,
		OverlayDir: filepath.Join(cl.work, "overlay", strconv.Itoa(cl.overlay)),
		Argv:       argv,
		Env:        envList,
		UID:        uid,
		GID:        gid,
	}
	js, _ := json.Marshal(spec2)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envLaunch+"="+string(js))
	pr := &proc{name: p.Name + "/" + c.Name, cmd: cmd, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	cmd.Stdout = syncWriter{pr.mu, pr.log}
	cmd.Stderr = syncWriter{pr.mu, pr.log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", pr.name, err)
	}
	go func() { pr.done <- cmd.Wait() }()
	cl.procs = append(cl.procs, pr)
	t.Logf("started %s: %s", pr.name, strings.Join(argv, " "))
	return pr
}

// configMapDir writes a rendered ConfigMap's keys as files, as a configMap volume shows them.
func (cl *cluster) configMapDir(name, dir string) string {
	cm := cl.r.configMap(cl.t, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		cl.t.Fatal(err)
	}
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			cl.t.Fatal(err)
		}
	}
	return dir
}

// podVolumes makes a directory for every volume of the pod (claims from the StatefulSet's
// templates, configMaps filled from the rendering).
func (cl *cluster) podVolumes(podName string, spec *corev1.PodSpec, claims []corev1.PersistentVolumeClaim, uid, gid int) map[string]string {
	t := cl.t
	vols := map[string]string{}
	base := filepath.Join(cl.work, "pods", podName)
	for _, c := range claims {
		dir := filepath.Join(base, "claim-"+c.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// What fsGroup does to a fresh volume on Kubernetes.
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		vols[c.Name] = dir
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			vols[v.Name] = cl.configMapDir(v.ConfigMap.Name, filepath.Join(base, "configmap-"+v.Name))
		case v.EmptyDir != nil:
			dir := filepath.Join(base, "empty-"+v.Name)
			if err := os.MkdirAll(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			vols[v.Name] = dir
		default:
			t.Fatalf("volume %s: only configMap, emptyDir and claim volumes are simulated here", v.Name)
		}
	}
	return vols
}

func userOf(spec *corev1.PodSpec) (int, int) {
	uid, gid := 0, 0
	if sc := spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = int(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = int(*sc.RunAsGroup)
		}
	}
	return uid, gid
}

// waitProbe polls an HTTP GET probe as the kubelet would, until it answers 200.
func (cl *cluster) waitProbe(pr *proc, ip string, c *corev1.Container, probe *corev1.Probe, what string) {
	t := cl.t
	port := containerPort(t, c, probe.HTTPGet.Port)
	url := "http://" + net.JoinHostPort(ip, strconv.Itoa(int(port))) + probe.HTTPGet.Path
	period := time.Duration(max(1, probe.PeriodSeconds)) * time.Second
	deadline := time.Now().Add(time.Duration(max(1, probe.FailureThreshold)) * period)
	client := http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-pr.done:
			t.Fatalf("%s exited (%v) before its %s probe passed:\n%s", pr.name, err, what, pr.output())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Logf("%s: %s probe %s passed", pr.name, what, url)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s probe %s did not pass in time (%v):\n%s", pr.name, what, url, err, pr.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serviceProxy stands in for a ClusterIP Service: it listens on the cluster IP at each port
// and forwards every connection to the next pod's target port.
func (cl *cluster) serviceProxy(ctx context.Context, svc *corev1.Service, c *corev1.Container) {
	t := cl.t
	for _, sp := range svc.Spec.Ports {
		target := containerPort(t, c, sp.TargetPort)
		ln, err := net.Listen("tcp", net.JoinHostPort(serviceIP, strconv.Itoa(int(sp.Port))))
		if err != nil {
			t.Fatalf("Service %s port %d: %v", svc.Name, sp.Port, err)
		}
		go func() { <-ctx.Done(); ln.Close() }()
		next := 0
		go func() {
			for {
				in, err := ln.Accept()
				if err != nil {
					return
				}
				cl.endpointsMu.Lock()
				ip := cl.podIPs[next%cl.endpoints]
				cl.endpointsMu.Unlock()
				next++
				go func() {
					defer in.Close()
					out, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(int(target))))
					if err != nil {
						return
					}
					defer out.Close()
					go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
					io.Copy(in, out)
				}()
			}
		}()
		t.Logf("Service %s: %s:%d -> pods' port %d", svc.Name, serviceIP, sp.Port, target)
	}
}

// The test outside the namespace re-executes itself inside one.
func TestRenderedClusterRuns(t *testing.T) {
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		t.Skip("set SLUICE_BIN to a sluice binary (target/release/sluice) to run the rendered cluster")
	}
	if os.Getenv(envPrivateNS) != "1" {
		if os.Geteuid() != 0 {
			t.Fatalf("running the rendered cluster needs root (mount namespaces, bind and overlay mounts)")
		}
		args := []string{"-test.run=^TestRenderedClusterRuns$", "-test.v", "-test.count=1", "-test.timeout=" + runTimeout.String()}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), envPrivateNS+"=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			t.Fatalf("the rendered cluster (in its own mount namespace) failed: %v", err)
		}
		return
	}
	runCluster(t, bin)
}

func runCluster(t *testing.T, bin string) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := os.Getenv("SLUICE_HELM_RUN_VALUES")
	if valuesFile == "" {
		valuesFile = "ci/3-replicas-values.yaml"
	}
	// Values a bigger cluster needs to fit this machine (e.g. resources.cpu=1), as --set.
	var sets []string
	if v := os.Getenv("SLUICE_HELM_RUN_SET"); v != "" {
		sets = strings.Split(v, ",")
	}
	r := render(t, valuesFile, sets...)
	sts := r.statefulSet(t)
	replicas := int(*sts.Spec.Replicas)
	t.Logf("rendered %s with %s: %d replicas", sts.Name, valuesFile, replicas)

	work, err := os.MkdirTemp(filepath.Join(repoRoot(t), "target"), "helm-cluster-")
	if err != nil {
		t.Fatalf("a scratch directory on the repository's disk (O_DIRECT needs a real file system): %v", err)
	}
	if os.Getenv("SLUICE_HELM_KEEP") == "" {
		defer os.RemoveAll(work)
	}
	cl := &cluster{t: t, r: r, work: work, sluice: bin}

	// Every name the cluster DNS would answer: pods through the headless Service, and the
	// client Service.
	hl := r.service(t, sts.Spec.ServiceName)
	client := r.service(t, fullName)
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	suffix := func(name string) string {
		return fmt.Sprintf("%s.%s.svc.cluster.local %s.%s.svc %s.%s", name, Namespace, name, Namespace, name, Namespace)
	}
	for i := 0; i < replicas; i++ {
		ip := podIPBase + strconv.Itoa(i+1)
		cl.podIPs = append(cl.podIPs, ip)
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		fmt.Fprintf(&hosts, "%s\t%s\n", ip, suffix(pod+"."+hl.Name))
	}
	fmt.Fprintf(&hosts, "%s\t%s\n", serviceIP, suffix(client.Name))
	hostsFile := filepath.Join(work, "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// This process is in a mount namespace of its own: the bind is seen by it and its
	// children only.
	if err := syscall.Mount(hostsFile, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount the private /etc/hosts: %v", err)
	}
	t.Logf("private /etc/hosts:\n%s", hosts.String())

	// The pods, all at once (podManagementPolicy: Parallel).
	spec := &sts.Spec.Template.Spec
	c := &spec.Containers[0]
	uid, gid := userOf(spec)
	var brokers []*proc
	for i := 0; i < replicas; i++ {
		name := fmt.Sprintf("%s-%d", sts.Name, i)
		labels := map[string]string{}
		for k, v := range sts.Spec.Template.Labels {
			labels[k] = v
		}
		labels["apps.kubernetes.io/pod-index"] = strconv.Itoa(i)
		labels["statefulset.kubernetes.io/pod-name"] = name
		id := podIdentity{Name: name, Namespace: Namespace, IP: cl.podIPs[i], HostIP: "127.0.0.1", Labels: labels}
		vols := cl.podVolumes(name, spec, sts.Spec.VolumeClaimTemplates, uid, gid)
		brokers = append(brokers, cl.start(id, spec, c, vols, uid, gid))
	}
	defer func() {
		for _, p := range cl.procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
			}
		}
		if t.Failed() {
			for _, p := range brokers {
				t.Logf("%s output:\n%s", p.name, tail(p.output(), 40))
			}
		}
	}()
	for i, p := range brokers {
		cl.waitProbe(p, cl.podIPs[i], c, c.StartupProbe, "startup")
		cl.waitProbe(p, cl.podIPs[i], c, c.ReadinessProbe, "readiness")
		cl.waitProbe(p, cl.podIPs[i], c, c.LivenessProbe, "liveness")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl.endpoints = replicas
	cl.serviceProxy(ctx, client, c)

	// The chart's `helm test` pod, container by container, as the kubelet runs it.
	runTestPod(t, cl)

	bootstrap := fmt.Sprintf("%s.%s.svc.cluster.local:%d", client.Name, Namespace, namedPort(t, c, "kafka"))
	if os.Getenv("SLUICE_RDKAFKA_SUITE") == "1" {
		t.Logf("rdkafka client suite against %s", bootstrap)
		cmd := exec.Command("cargo", "test", "-p", "sluice-broker", "--test", "rdkafka_compat")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "SLUICE_BOOTSTRAP="+bootstrap,
			"SLUICE_TEST_REPLICATION_FACTOR="+strconv.Itoa(min(replicas, 3)))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the rdkafka suite against the rendered cluster failed: %v\n%s", err, tail(string(out), 60))
		}
		t.Logf("rdkafka suite passed:\n%s", tail(string(out), 8))
	}

	// Every broker stops cleanly on SIGTERM within the pod's grace period.
	grace := 30 * time.Second
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if replicas > seedPods {
		brokers = scaleDown(t, cl, brokers, bootstrap, grace)
	}
	for _, p := range brokers {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range brokers {
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s: %v after SIGTERM, want exit 0:\n%s", p.name, err, tail(p.output(), 20))
			}
		case <-time.After(grace):
			t.Errorf("%s still running %v after SIGTERM (the kubelet would SIGKILL it)", p.name, grace)
		}
	}
}

// runTestPod runs the rendered helm test pod's init containers in order, then its
// containers, and checks the consumer printed every record the producer sent.
func runTestPod(t *testing.T, cl *cluster) {
	var tp *corev1.Pod
	for _, p := range cl.r.Pods {
		if p.Annotations["helm.sh/hook"] == "test" {
			tp = p
		}
	}
	if tp == nil {
		t.Fatalf("the chart renders no helm test pod")
	}
	uid, gid := userOf(&tp.Spec)
	vols := cl.podVolumes(tp.Name, &tp.Spec, nil, uid, gid)
	id := podIdentity{Name: tp.Name, Namespace: Namespace, IP: "127.77.2.1", HostIP: "127.0.0.1", Labels: tp.Labels}
	var last string
	for _, c := range append(append([]corev1.Container{}, tp.Spec.InitContainers...), tp.Spec.Containers...) {
		p := cl.start(id, &tp.Spec, &c, vols, uid, gid)
		select {
		case err := <-p.done:
			if err != nil {
				t.Fatalf("helm test container %s failed (%v):\n%s", c.Name, err, p.output())
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("helm test container %s did not finish:\n%s", c.Name, p.output())
		}
		t.Logf("helm test %s: ok\n%s", c.Name, tail(p.output(), 5))
		last = p.output()
	}
	// The records the produce step read, as key:value lines; the consumer prints
	// partition, offset, timestamp, key, value separated by tabs.
	var want []string
	for _, v := range cl.r.ConfigMaps {
		if v.Annotations["helm.sh/hook"] == "test" {
			sc := bufio.NewScanner(strings.NewReader(v.Data["records.txt"]))
			for sc.Scan() {
				if line := strings.TrimSpace(sc.Text()); line != "" {
					want = append(want, line)
				}
			}
		}
	}
	if len(want) == 0 {
		t.Fatalf("found no records.txt in the test's ConfigMap")
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(last), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 5 {
			got = append(got, f[3]+":"+f[4])
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("helm test consumed %q, want %q", got, want)
	}
	t.Logf("helm test: %d records produced and consumed through the client Service", len(got))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// seedPods is how many of the lowest ordinals are seeds (the chart's seeds template): they
// are the controller group's voters and cannot be decommissioned.
const seedPods = 3

// decommissionTimeout bounds one `sluice cluster decommission`, moves included.
const decommissionTimeout = 120 * time.Second

// scaleDown does what the README's scaling-down section says, down to the seeds: each pod
// above them, highest ordinal first, is decommissioned with the image's own CLI and then
// deleted (SIGTERM, as the StatefulSet controller does once replicas is lowered). Then the
// client Service reaches the seeds only, the cluster is healthy, and a topic created now
// round-trips records through it. Returns the pods left.
func scaleDown(t *testing.T, cl *cluster, brokers []*proc, bootstrap string, grace time.Duration) []*proc {
	sluice := func(args ...string) (string, error) {
		cmd := exec.Command(cl.sluice, append([]string{"--brokers", bootstrap}, args...)...)
		cmd.Env = append(os.Environ(), "SLUICE_BROKERS=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for i := len(brokers) - 1; i >= seedPods; i-- {
		started := time.Now()
		out, err := sluice("cluster", "decommission", strconv.Itoa(i),
			"--timeout-s", strconv.Itoa(int(decommissionTimeout/time.Second)))
		if err != nil {
			t.Fatalf("sluice cluster decommission %d: %v\n%s", i, err, out)
		}
		t.Logf("decommissioned broker %d in %s: %s", i, time.Since(started).Round(time.Millisecond), tail(out, 1))
		p := brokers[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s: %v after SIGTERM, want exit 0:\n%s", p.name, err, tail(p.output(), 20))
			}
		case <-time.After(grace):
			t.Fatalf("%s still running %v after SIGTERM", p.name, grace)
		}
		cl.endpointsMu.Lock()
		cl.endpoints = i
		cl.endpointsMu.Unlock()
	}
	brokers = brokers[:seedPods]
	// The moved replicas' ISR settles within a few heartbeats.
	var out string
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if out, err = sluice("cluster", "health"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("after scaling down to %d brokers, sluice cluster health: %v\n%s", seedPods, err, out)
	}
	t.Logf("scaled down to %d brokers: %s", seedPods, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	topic := "scaled-down"
	if out, err := sluice("topic", "create", topic, "-p", "3", "-r", strconv.Itoa(seedPods)); err != nil {
		t.Fatalf("sluice topic create after scaling down: %v\n%s", err, out)
	}
	cmd := exec.Command(cl.sluice, "--brokers", bootstrap, "topic", "produce", topic, "--key-delim", ":")
	cmd.Stdin = strings.NewReader("k1:one\nk2:two\nk3:three\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sluice topic produce after scaling down: %v\n%s", err, out)
	}
	out, err = sluice("--format", "json", "topic", "consume", topic, "-n", "3")
	if err != nil {
		t.Fatalf("sluice topic consume after scaling down: %v\n%s", err, out)
	}
	for _, v := range []string{"one", "two", "three"} {
		if !strings.Contains(out, `"`+v+`"`) {
			t.Fatalf("consumed after scaling down, want %q among: %s", v, out)
		}
	}
	return brokers
}
