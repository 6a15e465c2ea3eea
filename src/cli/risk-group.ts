import type { Command } from 'commander';

/**
 * The `tessera risk` command group, shared by the replay command and the control-plane commands
 * (list, show, quarantine, release): whoever registers first creates it, the others add to it.
 */
export function riskCommand(program: Command): Command {
  return program.commands.find((c) => c.name() === 'risk')
    ?? program.command('risk').description('risk engine: replay telemetry offline; identities\' scores, step-up and quarantine (admin)');
}
