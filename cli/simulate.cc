#include "cli/simulate.h"

#include <linux/if_ether.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/pcap_reader.h"
#include "common/status_macros.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "datapath/test_run.h"

namespace portcullis::cli {

absl::StatusOr<SimulationResult> Simulate(const policy::CompiledPolicy& policy,
                                          const std::string& pcap_path, const Progress& progress) {
  ASSIGN_OR_RETURN(std::unique_ptr<PcapReader> reader, PcapReader::Open(pcap_path));
  ASSIGN_OR_RETURN(
      std::unique_ptr<datapath::Datapath> dp,
      datapath::Datapath::Load(
          {.use_user_clock = true, .record_last_verdict = true, .assume_listeners = true}));
  datapath::PolicyInstaller installer(*dp);
  RETURN_IF_ERROR(installer.Install(policy, /*version=*/1));
  datapath::TestRunner runner(*dp);

  SimulationResult result;
  uint64_t clock_ns = 0;
  while (true) {
    ASSIGN_OR_RETURN(std::optional<CapturedFrame> frame, reader->Next());
    if (!frame) break;
    if (frame->data.size() < frame->wire_length) ++result.truncated;
    PacketVerdict v;
    if (frame->data.size() < ETH_HLEN) {
      // The kernel will not test-run a runt; the program's parser would find
      // it malformed, and so it is reported.
      v = {PC_VERDICT_DROP, PC_REASON_MALFORMED};
      if (policy.config.flags & PC_CFG_AUDIT) v.verdict = PC_VERDICT_AUDIT;
    } else {
      // The kernel's clock never runs backwards; a merged capture's can.
      // Holding it keeps token buckets from reading negative time.
      if (frame->timestamp_ns < clock_ns) {
        ++result.out_of_order;
      } else {
        clock_ns = frame->timestamp_ns;
      }
      RETURN_IF_ERROR(runner.SetClock(clock_ns));
      ASSIGN_OR_RETURN(datapath::Judgement j, runner.Run(frame->data));
      v = {j.verdict, j.reason};
    }
    result.packets.push_back(v);
    ++result.by_verdict[v.verdict];
    ++result.by_reason[v.reason];
    if (progress && result.packets.size() % 100000 == 0) progress(result.packets.size());
  }
  return result;
}

std::string FormatJson(const SimulationResult& r) {
  std::string out;
  for (size_t i = 0; i < r.packets.size(); ++i) {
    absl::StrAppend(&out, "{\"packet\": ", i + 1, ", \"verdict\": \"",
                    VerdictName(r.packets[i].verdict), "\", \"reason\": \"",
                    ReasonName(r.packets[i].reason), "\"}\n");
  }
  absl::StrAppend(&out, "{\"summary\": {\"total\": ", r.packets.size(),
                  ", \"pass\": ", r.by_verdict[PC_VERDICT_PASS],
                  ", \"drop\": ", r.by_verdict[PC_VERDICT_DROP],
                  ", \"audit\": ", r.by_verdict[PC_VERDICT_AUDIT],
                  ", \"cookie\": ", r.by_verdict[PC_VERDICT_COOKIE], ", \"by_reason\": {");
  bool first = true;
  for (int reason = 0; reason < PC_REASON_COUNT; ++reason) {
    if (r.by_reason[reason] == 0) continue;
    absl::StrAppend(&out, first ? "" : ", ", "\"", ReasonName(reason), "\": ", r.by_reason[reason]);
    first = false;
  }
  absl::StrAppend(&out, "}}}\n");
  return out;
}

std::string FormatTable(const SimulationResult& r, const std::string& pcap_path) {
  const uint64_t total = r.packets.size();
  auto pct = [&](uint64_t n) { return total ? 100.0 * n / total : 0.0; };
  std::string out = absl::StrFormat("%s: %d packets\n\n", pcap_path, total);
  absl::StrAppendFormat(&out, "  %-8s %10s %7s\n", "VERDICT", "PACKETS", "SHARE");
  for (int v = 0; v < PC_VERDICT_COUNT; ++v) {
    absl::StrAppendFormat(&out, "  %-8s %10d %6.1f%%\n", VerdictName(v), r.by_verdict[v],
                          pct(r.by_verdict[v]));
  }
  absl::StrAppendFormat(&out, "\n  %-18s %-7s %10s %7s\n", "REASON", "KIND", "PACKETS", "SHARE");
  std::vector<int> reasons;
  for (int reason = 0; reason < PC_REASON_COUNT; ++reason) {
    if (r.by_reason[reason]) reasons.push_back(reason);
  }
  std::stable_sort(reasons.begin(), reasons.end(),
                   [&](int a, int b) { return r.by_reason[a] > r.by_reason[b]; });
  for (int reason : reasons) {
    absl::StrAppendFormat(&out, "  %-18s %-7s %10d %6.1f%%\n", ReasonName(reason),
                          IsDropReason(reason)             ? "drop"
                          : reason == PC_REASON_SYN_COOKIE ? "cookie"
                                                           : "pass",
                          r.by_reason[reason], pct(r.by_reason[reason]));
  }
  if (r.truncated) {
    absl::StrAppendFormat(&out,
                          "\n  note: %d frames were cut short by the capture's snaplen; "
                          "they may be judged malformed\n",
                          r.truncated);
  }
  if (r.out_of_order) {
    absl::StrAppendFormat(&out,
                          "\n  note: %d frames were stamped earlier than the frame before; "
                          "they were judged at the later time\n",
                          r.out_of_order);
  }
  return out;
}

}  // namespace portcullis::cli
