// Subcommand registration. Each Register* adds a subcommand whose callback
// records its exit code; main() returns it.
#pragma once

#include <CLI/CLI.hpp>

namespace facet::cli {

void RegisterTokenize(CLI::App& app);
void RegisterGenerate(CLI::App& app);
void RegisterBench(CLI::App& app);
void RegisterChat(CLI::App& app);
void RegisterServe(CLI::App& app);
void RegisterClient(CLI::App& app);
void RegisterPlan(CLI::App& app);
void RegisterBatch(CLI::App& app);

// Exit code recorded by the subcommand that ran (0 when none failed).
int ExitCode();
void SetExitCode(int code);

}  // namespace facet::cli
