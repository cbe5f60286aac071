/* ds4-server — OpenAI- and Anthropic-compatible HTTP server for DeepSeek V4
 * Flash (INTERFACES.md §6).  Everything lives in src/server/; run
 * `ds4-server --help`. */
#include "server/server.h"

int main(int argc, char **argv) { return srv_main(argc, argv); }
