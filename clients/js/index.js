'use strict';
// Bolt for JavaScript on tokenkeep. See README.md.
const { TokenkeepClient, TokenkeepError, NotInstalledError } = require('./src/client');
const { RAW_REQUEST_KEY, captureRawRequest, wrapReceiver, tokenkeepAuthorize } = require('./src/bolt');
const { tokenkeepInstallationStore } = require('./src/store');

module.exports = {
  TokenkeepClient,
  TokenkeepError,
  NotInstalledError,
  RAW_REQUEST_KEY,
  captureRawRequest,
  wrapReceiver,
  tokenkeepAuthorize,
  tokenkeepInstallationStore,
};
