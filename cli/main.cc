// The `facet` command line: one subcommand per file, registered here.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"facet — serve Google's Gemma models on CPU and GPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "facet 0.1.0");
  facet::cli::RegisterTokenize(app);
  facet::cli::RegisterGenerate(app);
  facet::cli::RegisterChat(app);
  facet::cli::RegisterBench(app);
  facet::cli::RegisterServe(app);
  facet::cli::RegisterClient(app);
  facet::cli::RegisterPlan(app);
  facet::cli::RegisterBatch(app);
  CLI11_PARSE(app, argc, argv);
  return facet::cli::ExitCode();
}
