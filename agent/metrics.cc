#include "agent/metrics.h"

#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include "absl/strings/str_cat.h"
#include "agent/labels.h"
#include "common/abi.h"
#include "common/log.h"
#include "datapath/counters.h"
#include "datapath/map_reader.h"
#include "datapath/policy_installer.h"

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

// Calls fn on each entry of an LRU map, read in batches, at most its
// capacity (the bound on a scan's work); the number read.
template <typename Key, typename Value, typename Fn>
uint64_t ScanEntries(const datapath::Datapath& dp, datapath::Map m, Fn&& fn) {
  const datapath::MapShape shape = dp.shape(m);
  auto n = datapath::ReadBatched(
      dp.map_fd(m), datapath::MapName(m),
      {.key_size = sizeof(Key), .value_bytes = sizeof(Value), .limit = shape.max_entries},
      [&](const uint8_t* key, const uint8_t* value) {
        Key k;
        Value v;
        std::memcpy(&k, key, sizeof(k));
        std::memcpy(&v, value, sizeof(v));
        fn(k, v);
      });
  if (!n.ok()) {
    LogWarning("cannot read a map for /metrics", {{"error", std::string(n.status().message())}});
    return 0;
  }
  return *n;
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
      control_stale(prometheus::BuildGauge()
                        .Name("portcullis_control_stale")
                        .Help("1 while the control replica streaming this agent's policy "
                              "cannot read its store: its version may no longer be live")
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
      policy_reverts(prometheus::BuildCounter()
                         .Name("portcullis_policy_reverts_total")
                         .Help("Versions pushed with --confirm-within that this agent went back "
                               "from by itself, unconfirmed by their deadline")
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

void DatapathCollector::SetPolicy(const policy::CompiledPolicy& c) {
  auto p = std::make_shared<LivePolicy>();
  p->counted_range = c.counted_range;
  p->counted_ports = c.counted_ports;
  for (const pc_counted_port& r : c.counted_ports) p->ranges.insert({r.proto, r.first, r.last});
  p->rate_overrides = c.rate_overrides;
  p->config = c.config;
  using datapath::Map;
  p->entries = {
      {Map::kSrcV4Exact, c.src_v4_exact.size()},
      {Map::kSrcV6Exact, c.src_v6_exact.size()},
      {Map::kSrcV4Prefix, c.src_v4_prefix.size()},
      {Map::kSrcV6Prefix, c.src_v6_prefix.size()},
      {Map::kDstV4, c.dst_v4.size()},
      {Map::kDstV6, c.dst_v6.size()},
      {Map::kRateOverrides, c.rate_overrides.empty() ? 0 : c.rate_overrides.size() - 1},
  };
  std::lock_guard<std::mutex> lock(mu_);
  policy_ = std::move(p);
}

std::string DatapathCollector::PortLabel(const LivePolicy& p, uint8_t proto, uint16_t port) {
  const int l4 = proto == IPPROTO_TCP ? PC_L4_TCP : proto == IPPROTO_UDP ? PC_L4_UDP : -1;
  if (l4 < 0 || p.counted_range.size() != PC_PORT_ENTRIES) return "other";
  const uint16_t range = p.counted_range[static_cast<size_t>(l4) * PC_PORTS_PER_PROTO + port];
  if (range == 0 || range > p.counted_ports.size()) return "other";
  const pc_counted_port& r = p.counted_ports[range - 1];
  return PortRangeLabel(r.first, r.last);
}

DatapathCollector::Scan DatapathCollector::ScanLruMaps(const LivePolicy& p) const {
  std::lock_guard<std::mutex> lock(scan_mu_);
  const absl::Time now_wall = absl::Now();
  if (now_wall - scan_.at < options_.scan_cache) return scan_;
  Scan scan;
  scan.at = now_wall;
  const int64_t now = CoarseNowNs();
  // A bucket refills within milliseconds, so "empty right now" would show
  // nothing to a scrape; count the buckets that ran dry within the window,
  // each by the rates of its own port rule (rate_override_id) or the
  // policy-wide ones. ICMP budgets are not SYN or connection buckets, and
  // a shadow candidate's buckets (PC_SHADOW_BUCKET_TAG) limit nothing.
  auto judge = [&](uint32_t override_id, const pc_bucket& b) {
    if (override_id >= PC_MAX_RATE_OVERRIDES) return;
    const pc_rate_override* ov = override_id && override_id < p.rate_overrides.size()
                                     ? &p.rate_overrides[override_id]
                                     : nullptr;
    const int64_t syn_interval =
        static_cast<int64_t>((ov ? ov->syn_per_source : p.config.syn_per_source).interval_ns);
    const int64_t conn_interval =
        static_cast<int64_t>((ov ? ov->conn_per_source : p.config.conn_per_source).interval_ns);
    if (syn_interval && now - b.syn_empty_at < syn_interval + kRateLimitedWindowNs) ++scan.syn_over;
    if (conn_interval && now - b.conn_empty_at < conn_interval + kRateLimitedWindowNs) {
      ++scan.conn_over;
    }
  };
  using datapath::Map;
  scan.buckets =
      ScanEntries<pc_bucket_key_v4, pc_bucket>(
          dp_, Map::kSourceBucketsV4,
          [&](const pc_bucket_key_v4& k, const pc_bucket& b) { judge(k.rate_override_id, b); }) +
      ScanEntries<pc_bucket_key_v6, pc_bucket>(
          dp_, Map::kSourceBucketsV6,
          [&](const pc_bucket_key_v6& k, const pc_bucket& b) { judge(k.rate_override_id, b); });
  scan.dry_buckets =
      ScanEntries<pc_bucket_key_v4, pc_bucket>(dp_, Map::kDryBucketsV4,
                                               [](const pc_bucket_key_v4&, const pc_bucket&) {}) +
      ScanEntries<pc_bucket_key_v6, pc_bucket>(dp_, Map::kDryBucketsV6,
                                               [](const pc_bucket_key_v6&, const pc_bucket&) {});
  auto ignore = [](const pc_flow_key&, const uint64_t&) {};
  scan.egress_flows = ScanEntries<pc_flow_key, pc_flow>(dp_, Map::kEgressFlows,
                                                        [](const pc_flow_key&, const pc_flow&) {});
  scan.ingress_flows = ScanEntries<pc_flow_key, uint64_t>(dp_, Map::kIngressFlows, ignore);
  scan_ = scan;
  return scan;
}

std::vector<MetricFamily> DatapathCollector::Collect() const {
  const absl::Time start = absl::Now();
  std::shared_ptr<const LivePolicy> policy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    policy = policy_;
  }
  static const LivePolicy kNoPolicy;
  const LivePolicy& live = policy ? *policy : kNoPolicy;
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
        if (!live.ranges.count({c.key.proto, c.key.port, c.last_port})) continue;
        port = PortRangeLabel(c.key.port, c.last_port);
      } else {
        port = c.key.port ? PortLabel(live, c.key.proto, c.key.port) : "other";
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
  auto gauge_pair = [&](absl::string_view name, uint64_t n, uint64_t cap) {
    entries.metric.push_back(Value({{"map", std::string(name)}}, static_cast<double>(n), false));
    capacity.metric.push_back(Value({{"map", std::string(name)}}, static_cast<double>(cap), false));
  };
  using datapath::Map;
  for (const auto& [map, n] : live.entries) {
    // Per policy: each map holds both slots. rate_overrides' id 0 is unused.
    const uint64_t cap =
        dp_.shape(map).max_entries / PC_POLICY_SLOTS - (map == Map::kRateOverrides);
    gauge_pair(datapath::MapName(map), n, cap);
  }
  // The LRU maps: buckets and the records of dry ones (one map per family,
  // one name for users) and flows.
  const Scan scan = ScanLruMaps(live);
  gauge_pair(
      "source_buckets", scan.buckets,
      dp_.shape(Map::kSourceBucketsV4).max_entries + dp_.shape(Map::kSourceBucketsV6).max_entries);
  gauge_pair("dry_buckets", scan.dry_buckets,
             dp_.shape(Map::kDryBucketsV4).max_entries + dp_.shape(Map::kDryBucketsV6).max_entries);
  gauge_pair("egress_flows", scan.egress_flows, dp_.shape(Map::kEgressFlows).max_entries);
  gauge_pair("ingress_flows", scan.ingress_flows, dp_.shape(Map::kIngressFlows).max_entries);
  out.push_back(std::move(entries));
  out.push_back(std::move(capacity));

  MetricFamily limited{"portcullis_rate_limited_sources",
                       "Sources whose bucket ran dry in the last 10 s (by their port rule's rates)",
                       MetricType::Gauge,
                       {}};
  limited.metric.push_back(Value({{"kind", "syn"}}, static_cast<double>(scan.syn_over), false));
  limited.metric.push_back(Value({{"kind", "conn"}}, static_cast<double>(scan.conn_over), false));
  out.push_back(std::move(limited));

  // While a shadow candidate is judged: what it would change, by
  // (live -> shadow) reason. Counted from zero for each candidate.
  MetricFamily shadow{"portcullis_shadow_packets_total",
                      "Packets whose verdict or reason the shadow candidate would change, by the "
                      "live policy's reason and the candidate's",
                      MetricType::Counter,
                      {}};
  if (auto word = datapath::ReadActiveWord(dp_); word.ok() && (*word & PC_ACTIVE_SHADOW)) {
    if (auto counts = datapath::ReadShadowCounts(dp_); counts.ok()) {
      std::map<std::pair<uint8_t, uint8_t>, uint64_t> sums;
      for (const datapath::ShadowTransitionCount& c : counts->transitions) {
        sums[{c.key.from_reason, c.key.to_reason}] += c.packets;
      }
      for (const auto& [key, n] : sums) {
        shadow.metric.push_back(Value({{"from_reason", std::string(ReasonName(key.first))},
                                       {"to_reason", std::string(ReasonName(key.second))}},
                                      static_cast<double>(n), true));
      }
    }
  }
  out.push_back(std::move(shadow));

  MetricFamily cookies{"portcullis_syn_cookies_total",
                       "SYN cookies sent, and ACKs to a listener whose cookie was valid (handed "
                       "to the listener) or invalid",
                       MetricType::Counter,
                       {}};
  if (auto counts = datapath::ReadCookieCounts(dp_); counts.ok()) {
    for (uint32_t r = 0; r < PC_COOKIE_RESULTS; ++r) {
      cookies.metric.push_back(Value({{"result", std::string(kCookieResultNames[r])}},
                                     static_cast<double>((*counts)[r]), true));
    }
  }
  out.push_back(std::move(cookies));
  MetricFamily supported{"portcullis_syn_cookies_supported",
                         "1 when this node can answer SYNs with cookies (the kernel has "
                         "bpf_sk_assign_tcp_reqsk); 0: cookies are off whatever the policy says",
                         MetricType::Gauge,
                         {}};
  supported.metric.push_back(Value({}, dp_.tc_cookie_prog_fd() >= 0 ? 1.0 : 0.0, false));
  out.push_back(std::move(supported));

  MetricFamily took{"portcullis_scrape_duration_seconds",
                    "Time this scrape took to read the datapath's maps (bucket and flow maps "
                    "are scanned at most once per cache interval)",
                    MetricType::Gauge,
                    {}};
  took.metric.push_back(Value({}, absl::ToDoubleSeconds(absl::Now() - start), false));
  out.push_back(std::move(took));
  return out;
}

}  // namespace portcullis::agent
