// Hand-assembled XDP programs the benchmarks measure against.
#pragma once

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cstdio>
#include <cstdlib>

namespace portcullis::bench {

// Loads `n` instructions as an XDP program named `name`; a benchmark cannot
// go on without it, so failure exits.
inline int LoadXdpProgram(const char* name, const struct bpf_insn* insns, size_t n) {
  const int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns, n, nullptr);
  if (fd < 0) {
    std::fprintf(stderr, "bpf_prog_load(%s): ", name);
    std::perror(nullptr);
    std::exit(1);
  }
  return fd;
}

// An XDP program that only returns `action`: the floor of every figure.
inline int LoadReturnProgram(int action, const char* name) {
  const struct bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = action},
      {.code = BPF_JMP | BPF_EXIT},
  };
  return LoadXdpProgram(name, insns, 2);
}

// XDP_DROP after reading the source address (a bounds check and one load):
// what touching the headers costs, with no lookups at all.
inline int LoadReadThenDrop() {
  const struct bpf_insn insns[] = {
      {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_1, .off = 0},
      {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_3, .src_reg = BPF_REG_1, .off = 4},
      {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_4, .src_reg = BPF_REG_2},
      {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_4, .imm = 54},
      {.code = BPF_JMP | BPF_JGT | BPF_X, .dst_reg = BPF_REG_4, .src_reg = BPF_REG_3, .off = 1},
      {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_2, .off = 26},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_DROP},
      {.code = BPF_JMP | BPF_EXIT},
  };
  return LoadXdpProgram("xdp_read_drop", insns, 8);
}

// XDP_TX after `spins` iterations of an empty loop: a sender paced by its
// own per-frame work (live-frames runs cannot sleep between frames).
inline int LoadPacedTx(int spins) {
  const struct bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = spins},
      {.code = BPF_ALU64 | BPF_SUB | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
      {.code = BPF_JMP | BPF_JSGT | BPF_K, .dst_reg = BPF_REG_0, .off = -2, .imm = 0},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_TX},
      {.code = BPF_JMP | BPF_EXIT},
  };
  return LoadXdpProgram("xdp_paced_tx", insns, 5);
}

}  // namespace portcullis::bench
