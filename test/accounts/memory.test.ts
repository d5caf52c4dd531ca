import { MemoryAccountStore } from '../../src/accounts/memory.js';
import { accountStoreContract } from './contract.js';

accountStoreContract('memory', async () => {
  const store = new MemoryAccountStore();
  return { store, second: store, cleanup: async () => {} };
});
