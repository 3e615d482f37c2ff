{{/* Names. */}}
{{- define "sluice.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless Service that gives every pod its stable DNS name. */}}
{{- define "sluice.headless" -}}
{{- printf "%s-headless" (include "sluice.fullname" .) -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* <pod>.<headless>.<namespace>.svc.<domain>, for pod ordinal .i */}}
{{- define "sluice.podHost" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "sluice.fullname" .root) (int .i) (include "sluice.headless" .root) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* The client Service's DNS name and Kafka port. */}}
{{- define "sluice.bootstrap" -}}
{{- printf "%s.%s.svc.%s:%d" (include "sluice.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.kafka) -}}
{{- end -}}

{{/* Seeds: the RPC addresses of the first up-to-3 pods, through the headless Service. */}}
{{- define "sluice.seeds" -}}
{{- $root := . -}}
{{- $seeds := list -}}
{{- range $i := until (min 3 (int .Values.statefulset.replicas) | int) -}}
{{- $seeds = append $seeds (printf "%s:%d" (include "sluice.podHost" (dict "root" $root "i" $i)) (int $root.Values.ports.rpc)) -}}
{{- end -}}
{{- join "," $seeds -}}
{{- end -}}

{{/* The Kafka address a pod advertises inside the cluster (its stable DNS name). */}}
{{- define "sluice.advertisedKafka" -}}
{{- printf "$(POD_NAME).%s.$(POD_NAMESPACE).svc.%s:%d" (include "sluice.headless" .) .Values.clusterDomain (int .Values.ports.kafka) -}}
{{- end -}}

{{/* The external HOST:PORT of pod ordinal .i: addresses[i] or <pod>.<domain>; the node
port nodePortBase + i, or the load balancer's port. */}}
{{- define "sluice.externalAddress" -}}
{{- $v := .root.Values.external -}}
{{- $host := "" -}}
{{- if $v.addresses -}}
{{- $host = index $v.addresses (int .i) -}}
{{- else -}}
{{- $host = printf "%s-%d.%s" (include "sluice.fullname" .root) (int .i) $v.domain -}}
{{- end -}}
{{- $port := ternary (add (int $v.nodePortBase) (int .i)) (int $v.port) (eq $v.type "NodePort") -}}
{{- printf "%s:%d" $host (int $port) -}}
{{- end -}}

{{/* A config value as TOML: strings quoted, whole numbers as integers. */}}
{{- define "sluice.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- . | toJson -}}
{{- else if kindIs "bool" . -}}
{{- . -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- . | int64 -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}
