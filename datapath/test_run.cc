#include "datapath/test_run.h"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include "datapath/bpf_util.h"

namespace portcullis::datapath {

absl::Status TestRunner::SetClock(uint64_t now_ns) {
  if (!dp_.options().use_user_clock) {
    return absl::FailedPreconditionError("the datapath was loaded with the kernel clock");
  }
  const __u32 zero = 0;
  if (bpf_map_update_elem(dp_.map_fd(Map::kUserClock), &zero, &now_ns, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "user_clock", errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<Judgement> TestRunner::Run(absl::Span<const uint8_t> frame, pc_hook hook,
                                          uint32_t ingress_ifindex) {
  if (!dp_.options().record_last_verdict) {
    return absl::FailedPreconditionError("the datapath was loaded without record_last_verdict");
  }
  if (frame.size() < ETH_HLEN) {
    // The kernel refuses shorter test input; on a wire it is a runt frame.
    return absl::InvalidArgumentError("frames shorter than 14 bytes cannot be test-run");
  }
  const __u32 zero = 0;
  const pc_last_verdict unset = {PC_VERDICT_COUNT, PC_REASON_COUNT, 0};
  if (bpf_map_update_elem(dp_.map_fd(Map::kLastVerdict), &zero, &unset, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "last_verdict", errno);
  }
  // Room for a frame the program grows (a SYN-ACK over a short SYN).
  std::vector<uint8_t> out(frame.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_out = out.data(),
              .data_size_in = static_cast<__u32>(frame.size()),
              .data_size_out = static_cast<__u32>(out.size()), .repeat = 1);
  struct xdp_md xdp = {};
  struct __sk_buff skb = {};
  if (ingress_ifindex != 0) {
    if (hook == PC_HOOK_XDP) {
      xdp.data_end = static_cast<__u32>(frame.size());
      xdp.ingress_ifindex = ingress_ifindex;
      opts.ctx_in = &xdp;
      opts.ctx_size_in = sizeof(xdp);
    } else {
      // The interface the packet arrived on before it was routed to the pod.
      skb.ingress_ifindex = ingress_ifindex;
      opts.ctx_in = &skb;
      opts.ctx_size_in = sizeof(skb);
    }
  }
  const int prog = hook == PC_HOOK_TC ? dp_.tc_pod_prog_fd() : dp_.xdp_prog_fd();
  if (const int err = bpf_prog_test_run_opts(prog, &opts)) {
    return ErrnoStatus("bpf_prog_test_run_opts", hook == PC_HOOK_TC ? "tc" : "xdp", err);
  }
  pc_last_verdict lv{};
  if (bpf_map_lookup_elem(dp_.map_fd(Map::kLastVerdict), &zero, &lv)) {
    return ErrnoStatus("bpf_map_lookup_elem", "last_verdict", errno);
  }
  if (lv.verdict >= PC_VERDICT_COUNT || lv.reason >= PC_REASON_COUNT) {
    return absl::InternalError("the program returned without recording a verdict");
  }
  out.resize(opts.data_size_out);
  return Judgement{opts.retval, static_cast<pc_verdict>(lv.verdict),
                   static_cast<pc_reason>(lv.reason), lv.version, std::move(out)};
}

absl::Status TestRunner::RunEgress(absl::Span<const uint8_t> frame) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .repeat = 1);
  if (const int err = bpf_prog_test_run_opts(dp_.tc_record_prog_fd(), &opts)) {
    return ErrnoStatus("bpf_prog_test_run_opts", "tc egress", err);
  }
  if (opts.retval != 0 /* TC_ACT_OK */) {
    return absl::InternalError(absl::StrCat("the egress program returned ", opts.retval));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> TestRunner::RunRepeated(absl::Span<const uint8_t> frame, uint32_t repeat,
                                                 pc_hook hook, uint32_t* duration_ns) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .repeat = static_cast<int>(repeat));
  const int prog = hook == PC_HOOK_TC ? dp_.tc_pod_prog_fd() : dp_.xdp_prog_fd();
  if (const int err = bpf_prog_test_run_opts(prog, &opts)) {
    return ErrnoStatus("bpf_prog_test_run_opts", hook == PC_HOOK_TC ? "tc" : "xdp", err);
  }
  if (duration_ns != nullptr) *duration_ns = opts.duration;
  return opts.retval;
}

}  // namespace portcullis::datapath
