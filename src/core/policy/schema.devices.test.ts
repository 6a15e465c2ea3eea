import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.js';
import { PolicyEngine } from './engine.js';
import { schemaText } from './schema.js';

/** Device posture in Cedar (issue 12): `context.device` of `gateway:request`, validated strictly. */
function compileError(policy: string): string | undefined {
  try {
    PolicyEngine.compile({ policies: { 'p.cedar': policy } });
    return undefined;
  } catch (err) {
    return err instanceof TesseraError ? `${err.code}: ${err.message}` : String(err);
  }
}

describe('device posture in the schema', () => {
  it('validates a gateway policy that reads the posture facts with `has`', () => {
    expect(compileError(`permit (principal, action == Tessera::Action::"gateway:request", resource)
      when { context.device.enrolled && context.device.posture_state == "fresh" &&
             context.device has disk_encrypted && context.device.disk_encrypted &&
             context.device has screen_lock && context.device.screen_lock &&
             context.device has firewall && context.device.firewall &&
             context.device has patch_age_days && context.device.patch_age_days <= 30 &&
             context.device has os && context.device.os == "linux" &&
             context.device has os_version && context.device has agent_version &&
             context.device has posture_age_seconds && context.device.posture_age_seconds < 600 &&
             context.risk < 50 && context.method == "GET" };`)).toBeUndefined();
  });

  it('refuses an optional fact read without `has`, a misspelt fact, and a wrong type', () => {
    expect(compileError('permit (principal, action == Tessera::Action::"gateway:request", resource) when { context.device.disk_encrypted };')).toMatch(/TESSERA_POLICY_INVALID[\s\S]*optional attribute/);
    expect(compileError('permit (principal, action == Tessera::Action::"gateway:request", resource) when { context.device.posture_stat == "fresh" };')).toMatch(/TESSERA_POLICY_INVALID/);
    expect(compileError('permit (principal, action == Tessera::Action::"gateway:request", resource) when { context.device.posture_state == true };')).toMatch(/TESSERA_POLICY_INVALID/);
  });

  it('gives workload actions no device context, and gateway:request applies to User and App only', () => {
    expect(compileError('permit (principal, action == Tessera::Action::"http:request", resource) when { context.device.enrolled };')).toMatch(/TESSERA_POLICY_INVALID/);
    // A device is not a principal of gateway:request: Cedar calls such a policy impossible (a warning).
    const devicePrincipal = PolicyEngine.compile({ policies: { 'p.cedar': 'permit (principal == Tessera::Device::"spiffe://td/device/a", action == Tessera::Action::"gateway:request", resource);' } });
    expect(devicePrincipal.warnings.join('\n')).toMatch(/impossible/i);
    expect(compileError('permit (principal is Tessera::User, action == Tessera::Action::"gateway:request", resource is Tessera::App);')).toBeUndefined();
  });

  it('keeps unscoped policies that read the shared context valid for every action', () => {
    expect(compileError('forbid (principal, action, resource) when { context.risk >= 90 };')).toBeUndefined();
  });

  it('prints the posture type in the human schema', () => {
    expect(schemaText()).toMatch(/type DevicePosture = \{/);
    expect(schemaText()).toMatch(/action "gateway:request" appliesTo/);
  });
});
