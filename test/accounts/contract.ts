/**
 * The contract every AccountStore backend must pass. A backend's test file calls {@link accountStoreContract}
 * with a factory that opens two stores on one fresh database (as two processes or hosts would); the memory
 * backend, which no other process can share, gives the same store twice.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import type { AccountStore } from '../../src/accounts/store.js';
import { isRecgateError } from '../../src/errors.js';

export interface AccountStoreSubject {
  store: AccountStore;
  second: AccountStore;
  cleanup: () => Promise<void>;
}

const accountSid = () => `AC${randomBytes(16).toString('hex')}`;
const invalid = (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_INVALID_REQUEST';

export function accountStoreContract(name: string, open: () => Promise<AccountStoreSubject>): void {
  describe(`AccountStore contract: ${name}`, () => {
    const withStore = (fn: (s: AccountStoreSubject) => Promise<void>) => async () => {
      const subject = await open();
      try {
        await fn(subject);
      } finally {
        await subject.store.close();
        if (subject.second !== subject.store) await subject.second.close();
        await subject.cleanup();
      }
    };

    test(
      'matches interface',
      withStore(async ({ store }) => {
        for (const method of ['get', 'byAccountSid', 'put', 'delete', 'list', 'reseal', 'close']) {
          assert.equal(typeof (store as unknown as Record<string, unknown>)[method], 'function', method);
        }
      }),
    );

    test(
      'a business without a row is on the main account; put, get, replace, list and delete',
      withStore(async ({ store, second }) => {
        const sub = accountSid();
        assert.equal(await store.get('biz-a'), undefined);
        const put = await store.put({
          businessId: 'biz-a',
          kind: 'subaccount',
          accountSid: sub,
          sealedCredentials: null,
        });
        assert.equal(put.kind, 'subaccount');
        assert.ok(!Number.isNaN(Date.parse(put.updatedAt)));
        const seen = await second.get('biz-a');
        assert.deepEqual(
          { ...seen, updatedAt: undefined },
          {
            businessId: 'biz-a',
            kind: 'subaccount',
            accountSid: sub,
            sealedCredentials: null,
            updatedAt: undefined,
          },
        );
        const own = accountSid();
        await second.put({
          businessId: 'biz-a',
          kind: 'own',
          accountSid: own,
          sealedCredentials: 'rs1.sealed',
        });
        await store.put({
          businessId: 'biz-0',
          kind: 'subaccount',
          accountSid: sub,
          sealedCredentials: null,
        });
        assert.deepEqual(
          (await store.list()).map((r) => [r.businessId, r.kind, r.accountSid, r.sealedCredentials]),
          [
            ['biz-0', 'subaccount', sub, null],
            ['biz-a', 'own', own, 'rs1.sealed'],
          ],
        );
        assert.deepEqual(
          (await store.byAccountSid(sub)).map((r) => r.businessId),
          ['biz-0'],
        );
        assert.deepEqual(await store.byAccountSid(accountSid()), []);
        assert.equal(await second.delete('biz-a'), true);
        assert.equal(await store.delete('biz-a'), false);
        assert.equal(await store.get('biz-a'), undefined);
      }),
    );

    test(
      'reseal is a compare-and-set on the sealed credentials of an own row',
      withStore(async ({ store, second }) => {
        const sid = accountSid();
        await store.put({ businessId: 'biz-r', kind: 'own', accountSid: sid, sealedCredentials: 'old' });
        assert.equal(await second.reseal('biz-r', 'stale', 'new'), false);
        assert.equal(await second.reseal('biz-r', 'old', 'new'), true);
        assert.equal((await store.get('biz-r'))?.sealedCredentials, 'new');
        assert.equal(await store.reseal('biz-r', 'old', 'newer'), false);
        assert.equal(await store.reseal('nobody', 'old', 'new'), false);
      }),
    );

    test(
      'refuses malformed input, naming the field',
      withStore(async ({ store }) => {
        const sid = accountSid();
        const bad = [
          { businessId: '', kind: 'subaccount', accountSid: sid, sealedCredentials: null },
          { businessId: 'b', kind: 'main', accountSid: sid, sealedCredentials: null },
          { businessId: 'b', kind: 'subaccount', accountSid: 'ACnope', sealedCredentials: null },
          { businessId: 'b', kind: 'own', accountSid: sid, sealedCredentials: null },
          { businessId: 'b', kind: 'subaccount', accountSid: sid, sealedCredentials: 'x' },
        ];
        for (const input of bad) {
          await assert.rejects(store.put(input as never), invalid, JSON.stringify(input));
        }
        await assert.rejects(store.byAccountSid('nope'), /accountSid/);
        assert.deepEqual(await store.list(), []);
      }),
    );
  });
}
