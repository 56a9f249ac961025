// Status propagation helpers. Abseil 20220623 ships none of its own.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PC_STATUS_CONCAT_INNER_(a, b) a##b
#define PC_STATUS_CONCAT_(a, b) PC_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                                 \
  do {                                                        \
    if (absl::Status pc_status_ = (expr); !pc_status_.ok()) { \
      return pc_status_;                                      \
    }                                                         \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Fn())`: unwraps a StatusOr or returns its status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  PC_ASSIGN_OR_RETURN_IMPL_(PC_STATUS_CONCAT_(pc_statusor_, __LINE__), lhs, expr)

#define PC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()
