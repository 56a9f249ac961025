#include "datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/abi.h"
#include "common/status_macros.h"
#include "portcullis_bpf.skel.h"

namespace portcullis::datapath {
namespace {

struct bpf_map* OuterMap(struct ::portcullis_bpf* skel, SlotMap m) {
  switch (m) {
    case SlotMap::kSrcV4Exact: return skel->maps.src_v4_exact;
    case SlotMap::kSrcV6Exact: return skel->maps.src_v6_exact;
    case SlotMap::kSrcV4Prefix: return skel->maps.src_v4_prefix;
    case SlotMap::kSrcV6Prefix: return skel->maps.src_v6_prefix;
    case SlotMap::kDstV4: return skel->maps.dst_v4;
    case SlotMap::kDstV6: return skel->maps.dst_v6;
    case SlotMap::kPortClass: return skel->maps.port_class;
    case SlotMap::kPortClasses: return skel->maps.port_classes;
    case SlotMap::kCount: break;
  }
  return nullptr;
}

// The shape of an outer map's inner template. Read before load: libbpf
// frees the template once the outer map exists.
struct InnerSpec {
  std::string name;
  enum bpf_map_type type;
  __u32 key_size, value_size, max_entries, flags;
};

absl::StatusOr<InnerSpec> InnerSpecOf(struct bpf_map* outer) {
  struct bpf_map* tmpl = bpf_map__inner_map(outer);
  if (tmpl == nullptr) {
    return absl::InternalError(absl::StrCat(bpf_map__name(outer), ": no inner map template"));
  }
  return InnerSpec{bpf_map__name(outer),          bpf_map__type(tmpl),
                   bpf_map__key_size(tmpl),       bpf_map__value_size(tmpl),
                   bpf_map__max_entries(tmpl),    bpf_map__map_flags(tmpl)};
}

// An inner map shaped exactly like the outer map's template.
absl::StatusOr<UniqueFd> CreateInner(const InnerSpec& spec, int slot) {
  const std::string name = absl::StrCat(spec.name, "_", slot);
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = spec.flags);
  // Kernel map names are at most 15 characters; the full name is for errors.
  const std::string kernel_name = name.substr(0, BPF_OBJ_NAME_LEN - 1);
  const int fd = bpf_map_create(spec.type, kernel_name.c_str(), spec.key_size, spec.value_size,
                                spec.max_entries, &opts);
  if (fd < 0) return ErrnoStatus("bpf_map_create", name, errno);
  return UniqueFd(fd);
}

// Every map-in-map update waits for an RCU grace period; one batch for both
// slots waits once (kernels since 6.7) instead of once per slot.
absl::Status SetOuterSlots(struct bpf_map* outer, const std::array<UniqueFd, 2>& inner) {
  __u32 keys[PC_POLICY_SLOTS];
  int fds[PC_POLICY_SLOTS];
  for (int slot = 0; slot < PC_POLICY_SLOTS; ++slot) {
    keys[slot] = static_cast<__u32>(slot);
    fds[slot] = inner[slot].get();
  }
  __u32 count = PC_POLICY_SLOTS;
  if (bpf_map_update_batch(bpf_map__fd(outer), keys, fds, &count, nullptr) == 0) {
    return absl::OkStatus();
  }
  for (int slot = 0; slot < PC_POLICY_SLOTS; ++slot) {
    if (bpf_map_update_elem(bpf_map__fd(outer), &keys[slot], &fds[slot], BPF_ANY)) {
      return ErrnoStatus("bpf_map_update_elem", bpf_map__name(outer), errno);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view SlotMapName(SlotMap m) {
  static constexpr absl::string_view kNames[] = {
      "src_v4_exact", "src_v6_exact", "src_v4_prefix", "src_v6_prefix",
      "dst_v4",       "dst_v6",       "port_class",    "port_classes"};
  return kNames[static_cast<int>(m)];
}

absl::StatusOr<std::unique_ptr<Datapath>> Datapath::Load(const DatapathOptions& options) {
  std::unique_ptr<Datapath> dp(new Datapath(options));
  dp->skel_ = portcullis_bpf__open();
  if (dp->skel_ == nullptr) return ErrnoStatus("portcullis_bpf__open", "portcullis.bpf.o", errno);

  auto* rodata = dp->skel_->rodata;
  rodata->use_user_clock = options.use_user_clock;
  rodata->record_last_verdict = options.record_last_verdict;
  rodata->sample_interval_ns =
      options.samples_per_second ? 1'000'000'000ULL / options.samples_per_second : 0;
  rodata->sample_burst = options.sample_burst;

  std::array<InnerSpec, kSlotMapCount> specs;
  for (int m = 0; m < kSlotMapCount; ++m) {
    ASSIGN_OR_RETURN(specs[m], InnerSpecOf(OuterMap(dp->skel_, static_cast<SlotMap>(m))));
  }
  ASSIGN_OR_RETURN(const InnerSpec config_spec, InnerSpecOf(dp->skel_->maps.active_policy));

  if (const int err = portcullis_bpf__load(dp->skel_)) {
    return ErrnoStatus("portcullis_bpf__load", "portcullis.bpf.o", err);
  }

  for (int m = 0; m < kSlotMapCount; ++m) {
    struct bpf_map* outer = OuterMap(dp->skel_, static_cast<SlotMap>(m));
    for (int slot = 0; slot < PC_POLICY_SLOTS; ++slot) {
      ASSIGN_OR_RETURN(dp->inner_[m][slot], CreateInner(specs[m], slot));
    }
    RETURN_IF_ERROR(SetOuterSlots(outer, dp->inner_[m]));
  }
  // active_policy stays empty until the first install: no policy, no drops.
  for (int slot = 0; slot < PC_POLICY_SLOTS; ++slot) {
    ASSIGN_OR_RETURN(dp->config_inner_[slot], CreateInner(config_spec, slot));
  }
  return dp;
}

Datapath::~Datapath() {
  if (skel_ != nullptr) portcullis_bpf__destroy(skel_);
}

int Datapath::xdp_prog_fd() const { return bpf_program__fd(skel_->progs.portcullis_xdp); }
int Datapath::tc_ingress_prog_fd() const {
  return bpf_program__fd(skel_->progs.portcullis_tc_ingress);
}
int Datapath::active_policy_fd() const { return bpf_map__fd(skel_->maps.active_policy); }
int Datapath::verdict_counters_fd() const { return bpf_map__fd(skel_->maps.verdict_counters); }
int Datapath::port_drop_counters_fd() const {
  return bpf_map__fd(skel_->maps.port_drop_counters);
}
int Datapath::source_buckets_fd() const { return bpf_map__fd(skel_->maps.source_buckets); }
int Datapath::global_buckets_fd() const { return bpf_map__fd(skel_->maps.global_buckets); }
int Datapath::egress_flows_fd() const { return bpf_map__fd(skel_->maps.egress_flows); }
int Datapath::ingress_flows_fd() const { return bpf_map__fd(skel_->maps.ingress_flows); }
int Datapath::drop_samples_fd() const { return bpf_map__fd(skel_->maps.drop_samples); }
int Datapath::user_clock_fd() const { return bpf_map__fd(skel_->maps.user_clock); }
int Datapath::last_verdict_fd() const { return bpf_map__fd(skel_->maps.last_verdict); }

}  // namespace portcullis::datapath
