#include "datapath/attach.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "datapath/bpf_util.h"

namespace portcullis::datapath {
namespace {

absl::StatusOr<int> IfIndex(const std::string& ifname) {
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) {
    return absl::NotFoundError(absl::StrCat("no such interface: ", ifname));
  }
  return static_cast<int>(ifindex);
}

std::string ModeName(uint8_t attach_mode) {
  switch (attach_mode) {
    case XDP_ATTACHED_DRV:
      return "native";
    case XDP_ATTACHED_SKB:
      return "generic";
    case XDP_ATTACHED_HW:
      return "offload";
    default:
      return "unknown";
  }
}

absl::StatusOr<std::string> QueryMode(int ifindex, const std::string& ifname) {
  LIBBPF_OPTS(bpf_xdp_query_opts, query);
  if (const int err = bpf_xdp_query(ifindex, 0, &query)) {
    return ErrnoStatus("bpf_xdp_query", ifname, err);
  }
  return ModeName(query.attach_mode);
}

// The program name of a TC filter, or "" when it cannot be read.
std::string ProgName(uint32_t prog_id) {
  const int fd = bpf_prog_get_fd_by_id(prog_id);
  if (fd < 0) return "";
  struct bpf_prog_info info = {};
  __u32 len = sizeof(info);
  const int err = bpf_obj_get_info_by_fd(fd, &info, &len);
  close(fd);
  return err ? "" : std::string(info.name);
}

}  // namespace

absl::StatusOr<XdpMode> ParseXdpMode(absl::string_view text) {
  if (text == "auto") return XdpMode::kAuto;
  if (text == "native") return XdpMode::kNative;
  if (text == "generic") return XdpMode::kGeneric;
  return absl::InvalidArgumentError(
      absl::StrCat("--xdp-mode: \"", text, "\" is not auto, native or generic"));
}

absl::StatusOr<XdpAttachment> AttachXdp(int prog_fd, const std::string& ifname, XdpMode mode,
                                        const std::string& link_pin) {
  auto ifindex = IfIndex(ifname);
  if (!ifindex.ok()) return ifindex.status();

  // Adoption: swap the program under the pinned link; XDP never leaves.
  const int pinned = bpf_obj_get(link_pin.c_str());
  if (pinned >= 0) {
    UniqueFd link(pinned);
    if (const int err = bpf_link_update(link.get(), prog_fd, nullptr)) {
      return ErrnoStatus("bpf_link_update", ifname, err);
    }
    auto mode_name = QueryMode(*ifindex, ifname);
    if (!mode_name.ok()) return mode_name.status();
    return XdpAttachment{*mode_name, true, std::move(link)};
  }

  absl::Status last;
  for (uint32_t flags : {XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE}) {
    if ((mode == XdpMode::kNative && flags != XDP_FLAGS_DRV_MODE) ||
        (mode == XdpMode::kGeneric && flags != XDP_FLAGS_SKB_MODE)) {
      continue;
    }
    LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
    const int fd = bpf_link_create(prog_fd, *ifindex, BPF_XDP, &opts);
    if (fd < 0) {
      const int err = errno;
      if (err == EBUSY || err == EEXIST) {
        return absl::FailedPreconditionError(
            absl::StrCat("bpf_link_create(", ifname, "): another XDP program is attached (",
                         std::strerror(err), "); remove it (ip link set dev ", ifname,
                         " xdp off) or run portcullis-agent --uninstall"));
      }
      last = ErrnoStatus("bpf_link_create", ifname, err);
      continue;
    }
    UniqueFd link(fd);
    if (bpf_obj_pin(link.get(), link_pin.c_str())) {
      return ErrnoStatus("bpf_obj_pin", link_pin, errno);
    }
    return XdpAttachment{flags == XDP_FLAGS_DRV_MODE ? "native" : "generic", false,
                         std::move(link)};
  }
  return last;
}

absl::Status DetachXdp(const std::string& link_pin) {
  const int pinned = bpf_obj_get(link_pin.c_str());
  if (pinned < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus("bpf_obj_get", link_pin, errno);
  }
  UniqueFd link(pinned);
  // The interface may be gone already; the link then has nothing to detach.
  if (const int err = bpf_link_detach(link.get()); err && err != -ENOLINK && err != -EINVAL) {
    return ErrnoStatus("bpf_link_detach", link_pin, err);
  }
  if (unlink(link_pin.c_str()) && errno != ENOENT) {
    return ErrnoStatus("unlink", link_pin, errno);
  }
  return absl::OkStatus();
}

XdpOn QueryXdp(int ifindex, int prog_fd) {
  LIBBPF_OPTS(bpf_xdp_query_opts, query);
  if (bpf_xdp_query(ifindex, 0, &query) != 0 || query.prog_id == 0) return XdpOn::kNone;
  struct bpf_prog_info ours = {};
  __u32 len = sizeof(ours);
  const bool same = bpf_obj_get_info_by_fd(prog_fd, &ours, &len) == 0 && query.prog_id == ours.id;
  return same ? XdpOn::kOurs : XdpOn::kOther;
}

absl::Status RepinObject(int fd, const std::string& path) {
  if (unlink(path.c_str()) && errno != ENOENT) return ErrnoStatus("unlink", path, errno);
  if (bpf_obj_pin(fd, path.c_str())) return ErrnoStatus("bpf_obj_pin", path, errno);
  return absl::OkStatus();
}

absl::StatusOr<bool> AttachTc(int prog_fd, const std::string& ifname, TcDirection direction) {
  auto ifindex = IfIndex(ifname);
  if (!ifindex.ok()) return ifindex.status();
  return AttachTc(prog_fd, *ifindex, direction, ifname);
}

absl::StatusOr<bool> AttachTc(int prog_fd, int ifindex, TcDirection direction,
                              const std::string& ifname) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
              .attach_point = direction == TcDirection::kIngress ? BPF_TC_INGRESS : BPF_TC_EGRESS);
  bool created = true;
  if (const int err = bpf_tc_hook_create(&hook)) {
    if (err != -EEXIST) return ErrnoStatus("bpf_tc_hook_create", ifname, err);
    created = false;  // someone's clsact (maybe ours from before): not ours to remove
  }
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  if (const int err = bpf_tc_attach(&hook, &opts)) {
    return ErrnoStatus("bpf_tc_attach", ifname, err);
  }
  return created;
}

absl::StatusOr<bool> DetachTc(int ifindex, TcDirection direction, bool remove_qdisc) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
              .attach_point = direction == TcDirection::kIngress ? BPF_TC_INGRESS : BPF_TC_EGRESS);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  bool found = false;
  if (bpf_tc_query(&hook, &opts) == 0 &&
      absl::StartsWith(ProgName(opts.prog_id), "portcullis_tc")) {
    LIBBPF_OPTS(bpf_tc_opts, detach, .handle = kTcHandle, .priority = kTcPriority);
    if (const int err = bpf_tc_detach(&hook, &detach)) {
      return ErrnoStatus("bpf_tc_detach", absl::StrCat("ifindex ", ifindex), err);
    }
    found = true;
  }
  if (remove_qdisc) {
    // Destroys the whole clsact (both directions); only for a qdisc we created.
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    if (const int err = bpf_tc_hook_destroy(&hook); err && err != -ENOENT && err != -EINVAL) {
      return ErrnoStatus("bpf_tc_hook_destroy", absl::StrCat("ifindex ", ifindex), err);
    }
  }
  return found;
}

}  // namespace portcullis::datapath
