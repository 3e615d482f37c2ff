package helm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	fullName     = "sluice"
	headlessName = "sluice-headless"
	podIndexKey  = "apps.kubernetes.io/pod-index"
)

// Every values file of the matrix renders, decodes strictly, and has what a working cluster
// needs.
func TestChartMatrix(t *testing.T) {
	for _, vf := range ciValues(t) {
		t.Run(filepath.Base(vf), func(t *testing.T) {
			r := render(t, vf)
			checkRendering(t, r, valuesOf(t, vf))
		})
	}
	t.Run("defaults", func(t *testing.T) {
		checkRendering(t, render(t, ""), map[string]any{})
	})
}

// flags turns `--name=value` arguments into a map; a flag given twice fails.
func flags(t *testing.T, args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok {
			t.Fatalf("argument %q is not --name=value", a)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("--%s given twice", k)
		}
		m[k] = v
	}
	return m
}

func portOf(t *testing.T, hostPort string) int32 {
	i := strings.LastIndex(hostPort, ":")
	if i < 0 {
		t.Fatalf("%q has no port", hostPort)
	}
	p, err := strconv.Atoi(hostPort[i+1:])
	if err != nil {
		t.Fatalf("%q: %v", hostPort, err)
	}
	return int32(p)
}

// containerPort resolves a probe's or Service's port (a number or a name) on the container.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("port %q is not a port of container %s", p.StrVal, c.Name)
	return 0
}

func namedPort(t *testing.T, c *corev1.Container, name string) int32 {
	return containerPort(t, c, intstr.FromString(name))
}

func envByName(c *corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkRendering(t *testing.T, r *Rendered, values map[string]any) {
	sts := r.statefulSet(t)
	spec := sts.Spec
	replicas := 3
	if v, ok := lookup(values, "statefulset", "replicas").(float64); ok {
		replicas = int(v)
	}
	if spec.Replicas == nil || int(*spec.Replicas) != replicas {
		t.Errorf("replicas: got %v, want %d", spec.Replicas, replicas)
	}
	if spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q, want Parallel (an initial quorum needs all voters)", spec.PodManagementPolicy)
	}
	podLabels := labels.Set(spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the StatefulSet's selector %v does not select its own pods %v (%v)", spec.Selector, podLabels, err)
	}

	// The headless Service: stable names, published before readiness.
	if spec.ServiceName != headlessName {
		t.Errorf("serviceName %q, want %q", spec.ServiceName, headlessName)
	}
	hl := r.service(t, headlessName)
	if hl.Spec.ClusterIP != "None" || !hl.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service: clusterIP %q publishNotReadyAddresses %v", hl.Spec.ClusterIP, hl.Spec.PublishNotReadyAddresses)
	}
	if !labels.SelectorFromSet(hl.Spec.Selector).Matches(podLabels) {
		t.Errorf("headless Service does not select the pods")
	}

	pod := spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := &pod.Containers[0]
	env := envByName(c)

	// Per-pod identity from the downward API.
	wantField := map[string]string{
		"NODE_ID":       "metadata.labels['" + podIndexKey + "']",
		"POD_NAME":      "metadata.name",
		"POD_NAMESPACE": "metadata.namespace",
		"POD_IP":        "status.podIP",
	}
	for name, path := range wantField {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			t.Errorf("env %s: want the downward-API field %s, got %+v", name, path, e)
		}
	}
	// Every $(VAR) in the arguments is one the kubelet can expand.
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("argument %q names $(%s), which is not in the container's env", a, m[1])
			}
		}
	}
	if len(c.Args) == 0 || c.Args[0] != "start" {
		t.Fatalf("args %v do not start with `start`", c.Args)
	}
	f := flags(t, c.Args)
	external, _ := lookup(values, "external", "enabled").(bool)
	podDNS := "$(POD_NAME)." + headlessName + ".$(POD_NAMESPACE).svc.cluster.local"
	if f["node-id"] != "$(NODE_ID)" {
		t.Errorf("--node-id=%q, want $(NODE_ID)", f["node-id"])
	}
	if external {
		if _, ok := f["advertised-listener"]; ok {
			t.Errorf("with external access the advertised listener comes from the pod's config file, not a flag")
		}
		if f["config"] != "/etc/sluice/$(POD_NAME).toml" {
			t.Errorf("--config=%q, want the pod's own file", f["config"])
		}
	} else {
		if want := podDNS + ":" + strconv.Itoa(int(namedPort(t, c, "kafka"))); f["advertised-listener"] != want {
			t.Errorf("--advertised-listener=%q, want %q", f["advertised-listener"], want)
		}
	}
	rpcPort := namedPort(t, c, "rpc")
	if want := podDNS + ":" + strconv.Itoa(int(rpcPort)); f["advertised-rpc-listener"] != want {
		t.Errorf("--advertised-rpc-listener=%q, want %q", f["advertised-rpc-listener"], want)
	}
	var seeds []string
	for i := 0; i < min(3, replicas); i++ {
		seeds = append(seeds, fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local:%d", fullName, i, headlessName, Namespace, rpcPort))
	}
	if got := f["seeds"]; got != strings.Join(seeds, ",") {
		t.Errorf("--seeds=%q, want the first up-to-3 pods' RPC addresses %q", got, strings.Join(seeds, ","))
	}

	// The ports: what the broker listens on is what the container and Services declare.
	for flag, name := range map[string]string{"listen": "kafka", "rpc-listen": "rpc", "admin-listen": "admin"} {
		if p := portOf(t, f[flag]); p != namedPort(t, c, name) {
			t.Errorf("--%s=%s, but container port %s is %d", flag, f[flag], name, namedPort(t, c, name))
		}
	}
	adminPort := namedPort(t, c, "admin")

	// Probes on the admin port: startup and liveness /health, readiness /ready.
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"startup", c.StartupProbe, "/health"}, {"liveness", c.LivenessProbe, "/health"}, {"readiness", c.ReadinessProbe, "/ready"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET, got %+v", p.what, p.probe)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || containerPort(t, c, p.probe.HTTPGet.Port) != adminPort {
			t.Errorf("%s probe: GET %s on port %v, want %s on the admin port %d",
				p.what, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, adminPort)
		}
	}

	// Guaranteed QoS: requests == limits, whole CPUs; --cores is the CPU limit.
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		rq, okr := req[res]
		lm, okl := lim[res]
		if !okr || !okl || rq.Cmp(lm) != 0 {
			t.Errorf("%s: request %v limit %v, want equal (Guaranteed QoS)", res, rq.String(), lm.String())
		}
	}
	cpu := lim[corev1.ResourceCPU]
	if cpu.MilliValue()%1000 != 0 || cpu.Value() < 1 {
		t.Errorf("CPU limit %s is not a whole number of CPUs", cpu.String())
	}
	if f["cores"] != strconv.FormatInt(cpu.Value(), 10) {
		t.Errorf("--cores=%q, want the CPU limit %d", f["cores"], cpu.Value())
	}

	// Security context.
	psc := pod.SecurityContext
	if psc == nil || psc.SeccompProfile == nil {
		t.Fatalf("no pod seccomp profile")
	}
	wantSeccomp := "Localhost"
	if v, ok := lookup(values, "securityContext", "seccompProfile", "type").(string); ok {
		wantSeccomp = v
	}
	if string(psc.SeccompProfile.Type) != wantSeccomp {
		t.Errorf("seccomp profile %q, want %q", psc.SeccompProfile.Type, wantSeccomp)
	}
	if wantSeccomp == "Localhost" {
		lp := psc.SeccompProfile.LocalhostProfile
		if lp == nil || filepath.Base(*lp) != "seccomp-sluice.json" {
			t.Errorf("Localhost profile %v, want the chart's seccomp-sluice.json", lp)
		}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod must run as a non-root user: %+v", psc)
	}
	csc := c.SecurityContext
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Errorf("container security context: want no privilege escalation and a read-only root, got %+v", csc)
	}

	// Storage: a claim per pod, mounted where --data-dir points.
	if len(spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate, got %d", len(spec.VolumeClaimTemplates))
	}
	claim := spec.VolumeClaimTemplates[0].Name
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == claim && strings.HasPrefix(f["data-dir"], m.MountPath+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("--data-dir=%s is not on the claim %q", f["data-dir"], claim)
	}

	// The config file --config names is in the ConfigMap mounted there.
	cm := r.configMap(t, fullName)
	for i := 0; i < replicas; i++ {
		path := strings.ReplaceAll(f["config"], "$(POD_NAME)", fmt.Sprintf("%s-%d", fullName, i))
		key := strings.TrimPrefix(path, "/etc/sluice/")
		text, ok := cm.Data[key]
		if !ok {
			t.Errorf("pod %d's --config %s is not in ConfigMap %s (keys %v)", i, path, cm.Name, keys(cm.Data))
		}
		if external && !strings.Contains(text, `"advertised.listener" = `) {
			t.Errorf("pod %d's config has no advertised.listener:\n%s", i, text)
		}
		if !external {
			break
		}
	}
	config := valuesConfig(values)
	for k, v := range config {
		if !strings.Contains(cm.Data["sluice.toml"], fmt.Sprintf("%q = %s", k, v)) {
			t.Errorf("config key %s = %s is not in sluice.toml:\n%s", k, v, cm.Data["sluice.toml"])
		}
	}
	// Topics replicate on up to three brokers unless the values set the key.
	if _, set := config["default.replication.factor"]; !set {
		want := fmt.Sprintf("%q = %d", "default.replication.factor", min(replicas, 3))
		if !strings.Contains(cm.Data["sluice.toml"], want) {
			t.Errorf("sluice.toml lacks %s:\n%s", want, cm.Data["sluice.toml"])
		}
	}

	// The PDB selects exactly the StatefulSet's pods and lets one go at a time.
	if len(r.PDBs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, got %d", len(r.PDBs))
	}
	pdb := r.PDBs[0]
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !pdbSel.Matches(podLabels) {
		t.Errorf("the PDB's selector %v does not select the StatefulSet's pods %v", pdb.Spec.Selector, podLabels)
	}
	for _, p := range r.Pods {
		if pdbSel.Matches(labels.Set(p.Labels)) {
			t.Errorf("the PDB also selects the test pod %s", p.Name)
		}
	}

	// The client Service reaches the Kafka port.
	client := r.service(t, fullName)
	if !labels.SelectorFromSet(client.Spec.Selector).Matches(podLabels) {
		t.Errorf("client Service does not select the pods")
	}
	foundKafka := false
	for _, p := range client.Spec.Ports {
		if p.Name == "kafka" {
			foundKafka = containerPort(t, c, p.TargetPort) == namedPort(t, c, "kafka")
		}
	}
	if !foundKafka {
		t.Errorf("client Service has no port reaching the Kafka listener")
	}

	// External access: one Service per pod, selecting only that pod.
	var perPod []*corev1.Service
	for _, s := range r.Services {
		if strings.HasSuffix(s.Name, "-external") {
			perPod = append(perPod, s)
		}
	}
	if external {
		if len(perPod) != replicas {
			t.Errorf("external access: %d per-pod Services for %d brokers", len(perPod), replicas)
		}
		for i, s := range perPod {
			podName := fmt.Sprintf("%s-%d", fullName, i)
			if s.Spec.Selector["statefulset.kubernetes.io/pod-name"] != podName {
				t.Errorf("Service %s selects %v, want pod %s", s.Name, s.Spec.Selector, podName)
			}
			if string(s.Spec.Type) != lookup(values, "external", "type") {
				t.Errorf("Service %s type %s", s.Name, s.Spec.Type)
			}
		}
	} else if len(perPod) != 0 {
		t.Errorf("external access off, but %d per-pod Services", len(perPod))
	}

	if on, _ := lookup(values, "serviceMonitor", "enabled").(bool); on {
		if len(r.ServiceMonitors) != 1 || r.ServiceMonitors[0].Spec.Endpoints[0].Port != "admin" ||
			r.ServiceMonitors[0].Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor: want one scraping /metrics on the admin port, got %+v", r.ServiceMonitors)
		} else if !labels.SelectorFromSet(r.ServiceMonitors[0].Spec.Selector.MatchLabels).Matches(labels.Set(hl.Labels)) ||
			labels.SelectorFromSet(r.ServiceMonitors[0].Spec.Selector.MatchLabels).Matches(labels.Set(client.Labels)) {
			t.Errorf("the ServiceMonitor must select the headless Service only (one scrape per broker)")
		}
	} else if len(r.ServiceMonitors) != 0 {
		t.Errorf("ServiceMonitor rendered while off")
	}

	// helm test: a pod that produces and consumes through the client Service.
	checkTestPod(t, r)
}

func checkTestPod(t *testing.T, r *Rendered) {
	var tp *corev1.Pod
	for _, p := range r.Pods {
		if p.Annotations["helm.sh/hook"] == "test" {
			tp = p
		}
	}
	if tp == nil {
		t.Fatalf("no helm test pod")
	}
	bootstrap := fmt.Sprintf("%s.%s.svc.cluster.local:9092", fullName, Namespace)
	var steps []string
	for _, c := range append(append([]corev1.Container{}, tp.Spec.InitContainers...), tp.Spec.Containers...) {
		if len(c.Args) < 3 || c.Args[0] != "--brokers" || c.Args[1] != bootstrap {
			t.Errorf("test container %s: args %v do not go through the client Service %s", c.Name, c.Args, bootstrap)
			continue
		}
		steps = append(steps, strings.Join(c.Args[2:4], " "))
	}
	got := strings.Join(steps, ", ")
	if !strings.Contains(got, "topic produce") || !strings.HasSuffix(got, "topic consume") {
		t.Errorf("helm test steps %q: want a produce, then a consume last", got)
	}
}

// valuesConfig renders a values file's `config` the way the chart should, for comparison.
func valuesConfig(values map[string]any) map[string]string {
	out := map[string]string{}
	m, _ := lookup(values, "config").(map[string]any)
	for k, v := range m {
		switch x := v.(type) {
		case string:
			b, _ := json.Marshal(x)
			out[k] = string(b)
		case float64:
			if x == float64(int64(x)) {
				out[k] = strconv.FormatInt(int64(x), 10)
			} else {
				out[k] = strconv.FormatFloat(x, 'g', -1, 64)
			}
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// The shipped seccomp profile allows io_uring and refuses what it does not list; the copy in
// the ConfigMap is the same file.
func TestSeccompProfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir(t), "files", "seccomp-sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DefaultAction   string `json:"defaultAction"`
		DefaultErrnoRet int    `json:"defaultErrnoRet"`
		ArchMap         []struct {
			Architecture     string   `json:"architecture"`
			SubArchitectures []string `json:"subArchitectures"`
		} `json:"archMap"`
		Syscalls []struct {
			Names  []string `json:"names"`
			Action string   `json:"action"`
		} `json:"syscalls"`
	}
	if err := strictDecode(data, &p); err != nil {
		t.Fatalf("seccomp-sluice.json: %v", err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Errorf("defaultAction %q: a profile must refuse what it does not list", p.DefaultAction)
	}
	allowed := map[string]bool{}
	for _, s := range p.Syscalls {
		if s.Action == "SCMP_ACT_ALLOW" {
			for _, n := range s.Names {
				allowed[n] = true
			}
		}
	}
	for _, n := range []string{"io_uring_setup", "io_uring_enter", "io_uring_register", "execve", "clone3",
		"rt_sigtimedwait", "sched_setaffinity", "fdatasync", "syncfs", "flock", "accept4", "prlimit64"} {
		if !allowed[n] {
			t.Errorf("the profile does not allow %s", n)
		}
	}
	for _, n := range []string{"mount", "ptrace", "bpf", "kexec_load", "init_module", "unshare", "setns", "reboot"} {
		if allowed[n] {
			t.Errorf("the profile allows %s, which a broker never needs", n)
		}
	}
	cm := render(t, "").configMap(t, fullName+"-seccomp")
	if strings.TrimSpace(cm.Data["seccomp-sluice.json"]) != strings.TrimSpace(string(data)) {
		t.Errorf("the ConfigMap's profile differs from files/seccomp-sluice.json")
	}
}

// values.schema.json refuses values that would render a broken or unsafe cluster.
func TestSchemaRejectsBadValues(t *testing.T) {
	cases := []struct {
		set  []string
		want string
	}{
		{[]string{"resources.cpu=1.5"}, "/resources/cpu"},
		{[]string{"resources.cpu=0"}, "/resources/cpu"},
		{[]string{"resources.memory=lots"}, "/resources/memory"},
		{[]string{"statefulset.replicas=0"}, "/statefulset/replicas"},
		{[]string{"statefulset.podManagementPolicy=OrderedReady"}, "/statefulset/podManagementPolicy"},
		{[]string{"securityContext.seccompProfile.type=RuntimeDefault"}, "/securityContext/seccompProfile/type"},
		{[]string{"securityContext.seccompProfile.localhostProfile="}, "/securityContext/seccompProfile"},
		{[]string{"securityContext.runAsUser=0"}, "/securityContext/runAsUser"},
		{[]string{`config.node\.id=3`}, "node.id"},
		{[]string{`config.seeds=x:1`}, "seeds"},
		{[]string{"external.enabled=true"}, "/external"},
		{[]string{"external.enabled=true", "external.type=ClusterIP", "external.domain=x.example"}, "/external/type"},
		{[]string{"external.enabled=true", "external.addresses={a,b}"}, "one per broker"},
		{[]string{"external.nodePortBase=80"}, "/external/nodePortBase"},
		{[]string{"ports.kafka=70000"}, "/ports/kafka"},
		{[]string{"listenAddress=0.0.0.0:9092"}, "/listenAddress"},
		{[]string{"podDisruptionBudget.maxUnavailable=2"}, "/podDisruptionBudget/maxUnavailable"},
		{[]string{"tls.enabled=true"}, "/tls/enabled"},
		{[]string{"sasl.enabled=true"}, "/sasl/enabled"},
		{[]string{"unknownTopLevel=1"}, "unknownTopLevel"},
	}
	for _, c := range cases {
		_, err := helmTemplate(t, "", c.set...)
		if err == nil {
			t.Errorf("--set %v rendered; want it refused", c.set)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("--set %v refused, but the error does not name %q:\n%v", c.set, c.want, err)
		}
	}
}
