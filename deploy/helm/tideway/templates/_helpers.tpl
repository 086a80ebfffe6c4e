{{/*
Names, labels and the rendered configuration file, shared by every template.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "tideway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else the release name followed by the chart's
name unless the release name already contains it. Trimmed to 55 characters, so that the names the chart
derives from it (the "-peers" Service, the "-cookie-keys" Secret) stay within 63.
*/}}
{{- define "tideway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The chart label: name and version. */}}
{{- define "tideway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tideway.labels" -}}
helm.sh/chart: {{ include "tideway.chart" . }}
{{ include "tideway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tideway
{{- end }}

{{/* Labels that select the release's pods; they never change across upgrades. */}}
{{- define "tideway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tideway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "tideway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tideway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding `cluster-secret` and `admin-token`: the user's, or the one the chart creates. */}}
{{- define "tideway.secretName" -}}
{{- default (include "tideway.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* "true" when cookie keys are configured (in values or in an existing Secret), else empty. */}}
{{- define "tideway.cookieKeys" -}}
{{- if or .Values.cookie.existingSecret .Values.cookie.keys }}true{{ end }}
{{- end }}

{{/* The Secret holding `cookie-keys`. */}}
{{- define "tideway.cookieSecretName" -}}
{{- default (printf "%s-cookie-keys" (include "tideway.fullname" .)) .Values.cookie.existingSecret }}
{{- end }}

{{/* "true" when the instances share their counts ([cluster]), else empty. */}}
{{- define "tideway.clusterEnabled" -}}
{{- if or .Values.cluster.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The headless Service whose ready endpoints are the instances. */}}
{{- define "tideway.peersServiceName" -}}
{{- printf "%s-peers" (include "tideway.fullname" .) }}
{{- end }}

{{/* The Lease the instances elect their leader on. */}}
{{- define "tideway.leaseName" -}}
{{- default (include "tideway.fullname" .) .Values.kubernetes.lease }}
{{- end }}

{{/* The image reference: repository:tag, or repository:tag@digest when a digest is given. */}}
{{- define "tideway.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the secrets are mounted with secretsAsFiles. */}}
{{- define "tideway.secretsDir" -}}
/etc/tideway-secrets
{{- end }}

{{/*
Where the Secret of tls.secretName is mounted: beside /etc/tideway rather than in it, since a mount point
inside the read-only ConfigMap volume cannot be created.
*/}}
{{- define "tideway.tlsDir" -}}
/etc/tideway-tls
{{- end }}

{{/* A listener's address, `ip:port`, from bindAddress (an IPv6 address gets its brackets). */}}
{{- define "tideway.listen" -}}
{{- $address := .root.Values.bindAddress }}
{{- if and (contains ":" $address) (not (hasPrefix "[" $address)) }}
{{- $address = printf "[%s]" $address }}
{{- end }}
{{- printf "%s:%d" $address (int .port) | toJson }}
{{- end }}

{{/*
Values that cannot be rendered into something tideway or Kubernetes takes: refused here, with a message
naming the key, rather than by a pod that does not start.
*/}}
{{- define "tideway.validate" -}}
{{- if and .Values.rbac.create (eq .Values.rbac.scope "namespace") (eq .Values.kubernetes.tidewayapps "cluster") }}
{{- fail "kubernetes.tidewayapps=cluster reads TidewayApps in every namespace: it needs rbac.scope=cluster (or rbac.create=false and permissions granted otherwise)" }}
{{- end }}
{{- $first := "" }}
{{- range splitList "\n" .Values.apps }}
{{- $line := trim . }}
{{- if and (not $first) $line (not (hasPrefix "#" $line)) }}
{{- $first = $line }}
{{- end }}
{{- end }}
{{- if and $first (not (hasPrefix "[" $first)) }}
{{- fail (printf "apps must contain TOML tables only ([[app]], [defaults]): it is appended after the chart's own tables, so a top-level key such as %q would land in the wrong table" $first) }}
{{- end }}
{{- $ports := dict }}
{{- $listeners := list (list "proxy.port" .Values.proxy.port) (list "metrics.port" .Values.metrics.port) }}
{{- if .Values.admin.enabled }}
{{- $listeners = append $listeners (list "admin.port" .Values.admin.port) }}
{{- end }}
{{- if include "tideway.clusterEnabled" . }}
{{- $listeners = append $listeners (list "cluster.port" .Values.cluster.port) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $listeners = append $listeners (list "tls.containerPort" .Values.tls.containerPort) }}
{{- end }}
{{- range $listeners }}
{{- $port := toString (index . 1) }}
{{- if hasKey $ports $port }}
{{- fail (printf "%s and %s are both %s: every listener needs a port of its own" (get $ports $port) (index . 0) $port) }}
{{- end }}
{{- $_ := set $ports $port (index . 0) }}
{{- end }}
{{- range .Values.cookie.keys }}
{{- if lt (len .) 16 }}
{{- fail "cookie.keys: every key must be at least 16 bytes long" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (eq .Values.kubernetes.tidewayapps "off") (not (regexMatch "(?m)^[ \\t]*tls_certificate[ \\t]*=" .Values.apps)) }}
{{- fail "tls.enabled needs a certificate: tls.secretName (the default one), or apps that bring their own (tls_certificate in apps, or TidewayApps with kubernetes.tidewayapps)" }}
{{- end }}
{{- if and (eq .Values.ingress.servicePort "https") (not .Values.tls.enabled) }}
{{- fail "ingress.servicePort=https needs tls.enabled: without it the Service has no https port" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) }}
{{- fail "terminationGracePeriodSeconds must be longer than preStopSleepSeconds, or tideway is killed before it drains" }}
{{- end }}
{{- end }}

{{/*
The restart-only lines of [proxy]: its listeners, its handshake limit and its worker threads.
*/}}
{{- define "tideway.config.proxyRestart" -}}
listen = {{ include "tideway.listen" (dict "root" . "port" .Values.proxy.port) }}
{{- if .Values.tls.enabled }}
tls_listen = {{ include "tideway.listen" (dict "root" . "port" .Values.tls.containerPort) }}
{{- if not (kindIs "invalid" .Values.tls.maxHandshakes) }}
max_tls_handshakes = {{ int .Values.tls.maxHandshakes }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.proxy.workers) }}
workers = {{ int .Values.proxy.workers }}
{{- end }}
{{- end }}

{{/*
The sections tideway reads only when it starts: [metrics], [admin], [kubernetes] and [cluster]. The pod
template's checksum/restart-config annotation is computed over these and the lines above, so that a
change here rolls the pods out while a change of the apps is reloaded in place.
*/}}
{{- define "tideway.config.restartSections" -}}
[metrics]
listen = {{ include "tideway.listen" (dict "root" . "port" .Values.metrics.port) }}
{{- if .Values.admin.enabled }}

[admin]
listen = {{ include "tideway.listen" (dict "root" . "port" .Values.admin.port) }}
{{- if .Values.secretsAsFiles }}
token_file = {{ printf "%s/admin-token" (include "tideway.secretsDir" .) | toJson }}
{{- else }}
token_env = "TIDEWAY_ADMIN_TOKEN"
{{- end }}
{{- end }}

[kubernetes]
lease = {{ include "tideway.leaseName" . | toJson }}
{{- with .Values.kubernetes.leaseDuration }}
lease_duration = {{ . | toJson }}
{{- end }}
{{- with .Values.kubernetes.leaseRenewEvery }}
lease_renew_every = {{ . | toJson }}
{{- end }}
{{- with .Values.kubernetes.tidewayapps }}
tidewayapps = {{ . | toJson }}
{{- end }}
{{- with .Values.kubernetes.statusInterval }}
status_interval = {{ . | toJson }}
{{- end }}
{{- if include "tideway.clusterEnabled" . }}

[cluster]
listen = {{ include "tideway.listen" (dict "root" . "port" .Values.cluster.port) }}
peer_service = {{ include "tideway.peersServiceName" . | toJson }}
peer_port = "cluster"
{{- if .Values.secretsAsFiles }}
secret_file = {{ printf "%s/cluster-secret" (include "tideway.secretsDir" .) | toJson }}
{{- else }}
secret_env = "TIDEWAY_CLUSTER_SECRET"
{{- end }}
{{- with .Values.cluster.heartbeat }}
heartbeat = {{ . | toJson }}
{{- end }}
{{- with .Values.cluster.peerTimeout }}
peer_timeout = {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* The checksum of the restart-only configuration (see above). */}}
{{- define "tideway.config.restartChecksum" -}}
{{- printf "%s\n%s\n" (include "tideway.config.proxyRestart" .) (include "tideway.config.restartSections" .) | sha256sum }}
{{- end }}

{{/*
The whole tideway.toml. Top-level keys come before the first table: `app = []` says "no apps in this
file" when the values give no [[app]] (a file without one is otherwise refused on reload, since it would
retire every running app).
*/}}
{{- define "tideway.config" -}}
# tideway.toml, rendered by the tideway Helm chart from its values: change the values, not this file.
# Apps, [proxy] limits and [cookie] apply live when this ConfigMap changes; the listeners, [kubernetes]
# and [cluster] at the next restart (the chart rolls the pods out when they change).
{{- if not (regexMatch "(?m)^[ \\t]*\\[\\[[ \\t]*app[ \\t]*\\]\\]" .Values.apps) }}
app = []
{{- end }}

[proxy]
{{ include "tideway.config.proxyRestart" . }}
{{- if .Values.tls.enabled }}
{{- if .Values.tls.secretName }}
tls_certificate = {{ printf "%s/tls.crt" (include "tideway.tlsDir" .) | toJson }}
tls_key = {{ printf "%s/tls.key" (include "tideway.tlsDir" .) | toJson }}
{{- end }}
{{- /* Redirects go to the port clients reach, the Service's, not the pod's. */}}
https_port = {{ int .Values.service.httpsPort }}
{{- end }}
{{- with .Values.proxy.extraConfig }}
{{ trim . }}
{{- end }}

{{ include "tideway.config.restartSections" . }}
{{- if or (include "tideway.cookieKeys" .) .Values.cookie.maxAge }}

[cookie]
{{- if include "tideway.cookieKeys" . }}
{{- if .Values.secretsAsFiles }}
keys_file = {{ printf "%s/cookie-keys" (include "tideway.secretsDir" .) | toJson }}
{{- else }}
keys_env = "TIDEWAY_COOKIE_KEYS"
{{- end }}
{{- end }}
{{- with .Values.cookie.maxAge }}
max_age = {{ . | toJson }}
{{- end }}
{{- end }}
{{- with trim .Values.apps }}

# Apps (values: apps).
{{ . }}
{{- end }}
{{ end }}
