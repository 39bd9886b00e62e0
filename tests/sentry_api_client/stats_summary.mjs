// Calls stats-summary through Sentry's generated client (@sentry/api) and prints
// {"status": ..., "url": ..., "contentType": ..., "data": ..., "error": ...} as
// JSON. The one argument is a JSON object: {"baseUrl", "token", "organization", "query"}.
// With download=true the client hands back the CSV as text (parseAs "auto").
import { retrieveAnOrganization_sEventsCountByProject } from "@sentry/api";

const { baseUrl, token, organization, query } = JSON.parse(process.argv[2]);
const result = await retrieveAnOrganization_sEventsCountByProject({
  baseUrl,
  auth: token,
  path: { organization_id_or_slug: organization },
  query,
});
process.stdout.write(
  JSON.stringify({
    status: result.response ? result.response.status : null,
    url: result.request ? result.request.url : null,
    contentType: result.response ? result.response.headers.get("content-type") : null,
    disposition: result.response ? result.response.headers.get("content-disposition") : null,
    data: result.data ?? null,
    error: result.error ?? null,
  }),
);
