#include "agent/metrics.h"

#include <bpf/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include "absl/strings/str_cat.h"
#include "agent/labels.h"
#include "common/abi.h"
#include "datapath/counters.h"

namespace portcullis::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric Value(std::vector<prometheus::ClientMetric::Label> labels, double v, bool counter) {
  ClientMetric m;
  m.label = std::move(labels);
  if (counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  return m;
}

// portcullis_rate_limited_sources counts sources whose bucket ran dry within
// this long.
constexpr int64_t kRateLimitedWindowNs = 10'000'000'000;

int64_t CoarseNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the datapath's clock
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Entries of a hash map, calling fn on each key (0 if it cannot be read).
template <typename Key, typename Fn>
uint64_t CountKeys(int fd, absl::string_view name, Fn&& fn) {
  uint64_t n = 0;
  datapath::ForEachKey<Key>(fd, name, [&](const Key& k) {
    fn(k);
    ++n;
  }).IgnoreError();
  return n;
}

}  // namespace

AgentMetrics::AgentMetrics(prometheus::Registry& r)
    : policy_version(prometheus::BuildGauge()
                         .Name("portcullis_policy_version")
                         .Help("Version of the policy applied")
                         .Register(r)
                         .Add({})),
      apply_seconds(
          prometheus::BuildHistogram()
              .Name("portcullis_policy_apply_seconds")
              .Help("Time to apply a policy: compile, map update and switch")
              .Register(r)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                               0.5, 1, 2.5, 5, 10})),
      last_applied_timestamp(prometheus::BuildGauge()
                                 .Name("portcullis_policy_last_applied_timestamp_seconds")
                                 .Help("When the policy was last applied (Unix time)")
                                 .Register(r)
                                 .Add({})),
      control_connected(prometheus::BuildGauge()
                            .Name("portcullis_control_connected")
                            .Help("1 while the policy stream from the control service is up")
                            .Register(r)
                            .Add({})),
      ready(prometheus::BuildGauge()
                .Name("portcullis_ready")
                .Help("1 when programs are attached and a policy is applied (what /readyz says)")
                .Register(r)
                .Add({})),
      sync_errors(prometheus::BuildCounter()
                      .Name("portcullis_sync_errors_total")
                      .Help("Policy sync failures, by kind: invalid_policy, compile, apply, "
                            "attach, stream (control service unreachable or stream broken), "
                            "report, pins (pinned maps or links removed)")
                      .Register(r)),
      samples_suppressed(prometheus::BuildCounter()
                             .Name("portcullis_drop_samples_suppressed_total")
                             .Help("Drop samples not logged because of the log rate limit")
                             .Register(r)
                             .Add({})),
      xdp_attached(prometheus::BuildGauge()
                       .Name("portcullis_xdp_attached")
                       .Help("1 per interface with the XDP program attached, by mode")
                       .Register(r)) {
  // Every kind exists from the start, at 0, so that rates and alerts on it
  // work before the first error.
  for (const char* kind :
       {"invalid_policy", "compile", "apply", "attach", "stream", "report", "pins"}) {
    sync_errors.Add({{"kind", kind}});
  }
}

PortLabels PortLabelsOf(const v1::Policy& policy) {
  PortLabels labels;
  for (const auto* rules : {&policy.spec().failsafe(), &policy.spec().ports()}) {
    for (const v1::PortRule& rule : *rules) {
      const uint8_t proto = rule.proto() == v1::PROTOCOL_UDP ? IPPROTO_UDP : IPPROTO_TCP;
      for (const v1::PortRange& r : rule.ports()) {
        const std::string label = PortRangeLabel(r.first(), r.last());
        for (uint32_t p = r.first(); p <= r.last() && p <= 65535; ++p) {
          labels.try_emplace({proto, static_cast<uint16_t>(p)}, label);
        }
      }
    }
  }
  return labels;
}

void DatapathCollector::SetPolicy(PortLabels labels, const policy::CompiledPolicy& c) {
  std::lock_guard<std::mutex> lock(mu_);
  labels_ = std::move(labels);
  live_ranges_.clear();
  for (const pc_counted_port& r : c.counted_ports) live_ranges_.insert({r.proto, r.first, r.last});
  config_ = c.config;
  policy_maps_ = {
      {"src_v4_exact", {c.src_v4_exact.size(), PC_MAX_SRC_EXACT_V4}},
      {"src_v6_exact", {c.src_v6_exact.size(), PC_MAX_SRC_EXACT_V6}},
      {"src_v4_prefix", {c.src_v4_prefix.size(), PC_MAX_SRC_PREFIX_V4}},
      {"src_v6_prefix", {c.src_v6_prefix.size(), PC_MAX_SRC_PREFIX_V6}},
      {"dst_v4", {c.dst_v4.size(), PC_MAX_DESTINATIONS}},
      {"dst_v6", {c.dst_v6.size(), PC_MAX_DESTINATIONS}},
      {"rate_overrides", {c.rate_overrides.size() - 1, PC_MAX_RATE_OVERRIDES - 1}},
  };
}

std::vector<MetricFamily> DatapathCollector::Collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<MetricFamily> out;

  MetricFamily packets{"portcullis_packets_total",
                       "Packets judged, by interface, hook, verdict and reason",
                       MetricType::Counter,
                       {}};
  MetricFamily bytes{"portcullis_bytes_total",
                     "Bytes judged, by interface, hook, verdict and reason",
                     MetricType::Counter,
                     {}};
  if (auto counts = datapath::ReadVerdictCounters(dp_); counts.ok()) {
    for (const datapath::VerdictCount& c : *counts) {
      std::vector<ClientMetric::Label> labels = {
          {"iface", IfaceName(c.key.ifindex)},
          {"hook", std::string(HookName(c.key.hook))},
          {"verdict", std::string(VerdictName(c.key.verdict))},
          {"reason", std::string(ReasonName(c.key.reason))}};
      packets.metric.push_back(Value(labels, static_cast<double>(c.total.packets), true));
      bytes.metric.push_back(Value(labels, static_cast<double>(c.total.bytes), true));
    }
  }
  out.push_back(std::move(packets));
  out.push_back(std::move(bytes));

  // Drops by port: named ports under their policy label, the rest "other".
  MetricFamily by_port{"portcullis_drops_by_port_total",
                       "Dropped (or audited) packets by protocol, destination port and reason",
                       MetricType::Counter,
                       {}};
  if (auto counts = datapath::ReadPortDropCounters(dp_); counts.ok()) {
    std::map<std::tuple<std::string, std::string, std::string>, uint64_t> sums;
    for (const datapath::PortDropCount& c : *counts) {
      std::string port;
      if (c.from_row) {
        // A row counts one range, under that range's label, while the live
        // policy names it (a row kept from an older policy stays out of
        // "other", which would go down again when the row is reclaimed).
        if (!live_ranges_.count({c.key.proto, c.key.port, c.last_port})) continue;
        port = PortRangeLabel(c.key.port, c.last_port);
      } else {
        auto it = labels_.find({c.key.proto, c.key.port});
        port = it == labels_.end() ? "other" : it->second;
      }
      sums[{ProtoName(c.key.proto), port, std::string(ReasonName(c.key.reason))}] += c.packets;
    }
    for (const auto& [key, n] : sums) {
      by_port.metric.push_back(Value(
          {{"proto", std::get<0>(key)}, {"port", std::get<1>(key)}, {"reason", std::get<2>(key)}},
          static_cast<double>(n), true));
    }
  }
  out.push_back(std::move(by_port));

  MetricFamily entries{"portcullis_map_entries",
                       "Entries in each datapath map (policy maps: the live policy)",
                       MetricType::Gauge,
                       {}};
  MetricFamily capacity{"portcullis_map_capacity",
                        "Capacity of each datapath map (policy maps: per policy)",
                        MetricType::Gauge,
                        {}};
  for (const auto& [name, sizes] : policy_maps_) {
    entries.metric.push_back(Value({{"map", name}}, static_cast<double>(sizes.first), false));
    capacity.metric.push_back(Value({{"map", name}}, static_cast<double>(sizes.second), false));
  }

  // Buckets: how many sources exist, and how many are out of tokens now.
  const int64_t now = CoarseNowNs();
  uint64_t syn_over = 0, conn_over = 0;
  // A bucket refills within milliseconds, so "empty right now" would show
  // nothing to a scrape; count the buckets that ran dry within the window.
  auto count_over = [&](int fd, const void* key) {
    pc_bucket b;
    if (bpf_map_lookup_elem(fd, key, &b)) return;
    const int64_t syn_interval = static_cast<int64_t>(config_.syn_per_source.interval_ns);
    const int64_t conn_interval = static_cast<int64_t>(config_.conn_per_source.interval_ns);
    if (syn_interval && now - b.syn_empty_at < syn_interval + kRateLimitedWindowNs) ++syn_over;
    if (conn_interval && now - b.conn_empty_at < conn_interval + kRateLimitedWindowNs) {
      ++conn_over;
    }
  };
  // One map per family in the datapath; one "source_buckets" for users.
  const int v4_fd = dp_.source_buckets_v4_fd(), v6_fd = dp_.source_buckets_v6_fd();
  const uint64_t bucket_entries =
      CountKeys<pc_bucket_key_v4>(v4_fd, "source_buckets_v4",
                                  [&](const pc_bucket_key_v4& k) { count_over(v4_fd, &k); }) +
      CountKeys<pc_bucket_key_v6>(v6_fd, "source_buckets_v6",
                                  [&](const pc_bucket_key_v6& k) { count_over(v6_fd, &k); });
  const std::pair<const char*, std::pair<int, uint64_t>> lru[] = {
      {"source_buckets", {v4_fd, PC_MAX_BUCKETS_V4 + PC_MAX_BUCKETS_V6}},
      {"egress_flows", {dp_.egress_flows_fd(), PC_MAX_FLOWS}},
      {"ingress_flows", {dp_.ingress_flows_fd(), PC_MAX_FLOWS}},
  };
  for (const auto& [name, fd_cap] : lru) {
    const uint64_t n = fd_cap.first == v4_fd
                           ? bucket_entries
                           : CountKeys<pc_flow_key>(fd_cap.first, name, [](const pc_flow_key&) {});
    entries.metric.push_back(Value({{"map", name}}, static_cast<double>(n), false));
    capacity.metric.push_back(Value({{"map", name}}, static_cast<double>(fd_cap.second), false));
  }
  out.push_back(std::move(entries));
  out.push_back(std::move(capacity));

  MetricFamily limited{"portcullis_rate_limited_sources",
                       "Sources whose bucket ran dry in the last 10 s (policy-wide rates)",
                       MetricType::Gauge,
                       {}};
  limited.metric.push_back(Value({{"kind", "syn"}}, static_cast<double>(syn_over), false));
  limited.metric.push_back(Value({{"kind", "conn"}}, static_cast<double>(conn_over), false));
  out.push_back(std::move(limited));
  return out;
}

}  // namespace portcullis::agent
